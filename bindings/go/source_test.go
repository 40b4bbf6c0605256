package easdirect

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// registry is a source function whose answer the test changes: a list of n endpoints, an
// error, a panic, or an empty list.
type registry struct {
	mu    sync.Mutex
	n     int
	err   error
	panic any
	extra []Endpoint // appended to the list (malformed ones, for instance)
	calls atomic.Int64
}

func (r *registry) fetch() ([]Endpoint, error) {
	r.calls.Add(1)
	r.mu.Lock()
	n, err, p, extra := r.n, r.err, r.panic, r.extra
	r.mu.Unlock()
	if p != nil {
		panic(p)
	}
	if err != nil {
		return nil, err
	}
	list := make([]Endpoint, 0, n+len(extra))
	for i := 1; i <= n; i++ {
		list = append(list, Endpoint{IP: "10.0.0.1", Port: uint16(50000 + i), Weight: DefaultWeight})
	}
	return append(list, extra...), nil
}

func (r *registry) set(n int, err error, p any) {
	r.mu.Lock()
	r.n, r.err, r.panic = n, err, p
	r.mu.Unlock()
}

// waitCalls waits until fetch has been called k more times.
func (r *registry) waitCalls(t *testing.T, k int64) {
	t.Helper()
	seen := r.calls.Load()
	eventually(t, strconv.FormatInt(k, 10)+" more fetches", func() bool { return r.calls.Load() >= seen+k })
}

func newSourceClient(t *testing.T, fetch func() ([]Endpoint, error)) *Client {
	t.Helper()
	c, err := NewWithSource(fetch, WithRefreshInterval(10*time.Millisecond))
	if err != nil {
		t.Fatalf("NewWithSource: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func countOf(t *testing.T, c *Client) int {
	t.Helper()
	list, err := c.Instances()
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

var errRegistryDown = errors.New("registry unreachable")

func TestASourceIsFollowedAndFailuresKeepTheCache(t *testing.T) {
	r := &registry{n: 2}
	c := newSourceClient(t, r.fetch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countOf(t, c); n != 2 {
		t.Fatalf("%d instances, want 2", n)
	}
	if c.Service() != "" {
		t.Fatalf("a source client names no service: %q", c.Service())
	}
	r.set(4, nil, nil)
	eventually(t, "the new list", func() bool { return countOf(t, c) == 4 })
	if err := c.LastError(); err != nil {
		t.Fatalf("LastError after a good fetch: %v", err)
	}

	// An error: the cache is kept, and LastError wraps the function's error.
	r.set(0, errRegistryDown, nil)
	r.waitCalls(t, 3)
	if n := countOf(t, c); n != 4 {
		t.Fatalf("an error must keep the cache: %d instances", n)
	}
	if _, err := c.Select(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "LastError to report the function's error", func() bool {
		err := c.LastError()
		return errors.Is(err, ErrDiscoveryFailed) && errors.Is(err, errRegistryDown) &&
			strings.Contains(err.Error(), "registry unreachable")
	})

	// A panic: recovered, the cache is kept.
	r.set(0, nil, "a bug in the registry client")
	r.waitCalls(t, 3)
	if n := countOf(t, c); n != 4 {
		t.Fatalf("a panic must keep the cache: %d instances", n)
	}
	eventually(t, "LastError to report the panic", func() bool {
		err := c.LastError()
		return errors.Is(err, ErrDiscoveryFailed) && err != nil &&
			strings.Contains(err.Error(), "panicked: a bug in the registry client")
	})
	// panic(err) is unwrapped too.
	r.set(0, nil, errRegistryDown)
	r.waitCalls(t, 3)
	eventually(t, "LastError to wrap the panic's error", func() bool {
		return errors.Is(c.LastError(), errRegistryDown)
	})

	// An empty list.
	r.set(0, nil, nil)
	r.waitCalls(t, 3)
	if n := countOf(t, c); n != 4 {
		t.Fatalf("an empty list must keep the cache: %d instances", n)
	}
	if err := c.LastError(); !errors.Is(err, ErrDiscoveryFailed) || errors.Is(err, errRegistryDown) {
		t.Fatalf("LastError after an empty list: %v", err)
	}
	st, err := c.Stats()
	if err != nil || st.RefreshFailed < 12 || st.Instances != 4 {
		t.Fatalf("stats %+v, %v", st, err)
	}

	// And the list is followed again.
	r.set(1, nil, nil)
	eventually(t, "the list after the failures", func() bool { return countOf(t, c) == 1 })
	if err := c.LastError(); err != nil {
		t.Fatalf("LastError after recovering: %v", err)
	}
}

func TestWaitReadyCarriesTheSourceError(t *testing.T) {
	r := &registry{err: errRegistryDown}
	c := newSourceClient(t, r.fetch)
	r.waitCalls(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.WaitReady(ctx)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) ||
		!errors.Is(err, errRegistryDown) || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestMalformedEndpointsAreSkipped(t *testing.T) {
	r := &registry{n: 1, extra: []Endpoint{
		{IP: "not-an-ip", Port: 1, Weight: 1},
		{IP: "10.0.0.9", Port: 0, Weight: 1},
		{IP: "10.0.0.9\x00junk", Port: 2, Weight: 1}, // a NUL must not cut it to 10.0.0.9
		{IP: "", Port: 3, Weight: 1},
		{IP: "[fd00::1]", Port: 4, Weight: 1}, // brackets are accepted
		{IP: "fd00::2", Port: 5, Weight: DefaultWeight},
		{IP: "10.0.0.3", Port: 6}, // weight 0: listed, never picked
	}}
	c := newSourceClient(t, r.fetch)
	if err := c.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	list, err := c.Instances()
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]uint32{}
	for _, in := range list {
		hosts[in.Host] = in.Weight
	}
	want := map[string]uint32{"10.0.0.1:50001": 100, "[fd00::1]:4": 1, "[fd00::2]:5": 100, "10.0.0.3:6": 0}
	if len(hosts) != len(want) {
		t.Fatalf("instances %v, want %v", hosts, want)
	}
	for h, w := range want {
		if got, ok := hosts[h]; !ok || got != w {
			t.Fatalf("instances %v, want %v", hosts, want)
		}
	}
	for range 50 {
		inst, err := c.Select()
		if err != nil || inst.Weight == 0 {
			t.Fatalf("Select: %+v, %v", inst, err)
		}
	}
}

func TestCloseReleasesTheSourceOnceAndStopsFetches(t *testing.T) {
	live := liveSources.Load()
	r := &registry{n: 3}
	c, err := NewWithSource(r.fetch, WithRefreshInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got := liveSources.Load(); got != live+1 {
		t.Fatalf("live sources %d, want %d", got, live+1)
	}
	if err := c.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.waitCalls(t, 2)
	c.Close()
	// The handle is deleted inside Close (after a fetch in progress returned).
	if got := liveSources.Load(); got != live {
		t.Fatalf("live sources %d after Close, want %d", got, live)
	}
	calls := r.calls.Load()
	c.Close() // idempotent: no second release
	time.Sleep(100 * time.Millisecond)
	if got := r.calls.Load(); got != calls {
		t.Fatalf("fetch called %d times after Close", got-calls)
	}
	if got := liveSources.Load(); got != live {
		t.Fatalf("live sources %d after a second Close, want %d", got, live)
	}
	if _, err := c.Select(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Select after Close: %v", err)
	}
	if err := c.LastError(); !errors.Is(err, ErrClosed) {
		t.Fatalf("LastError after Close: %v", err)
	}
}

func TestCloseWaitsForAFetchInProgress(t *testing.T) {
	live := liveSources.Load()
	entered := make(chan struct{}, 1)
	var finished atomic.Bool
	c, err := NewWithSource(func() ([]Endpoint, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		time.Sleep(100 * time.Millisecond)
		finished.Store(true)
		return []Endpoint{{IP: "10.0.0.1", Port: 80, Weight: DefaultWeight}}, nil
	}, WithRefreshInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	c.Close()
	if !finished.Load() {
		t.Fatal("Close returned while a fetch was running")
	}
	if got := liveSources.Load(); got != live {
		t.Fatalf("live sources %d after Close, want %d", got, live)
	}
}

func TestASourceMayUseAndCloseItsOwnClient(t *testing.T) {
	live := liveSources.Load()
	var self atomic.Pointer[Client]
	var seen atomic.Int64
	c, err := NewWithSource(func() ([]Endpoint, error) {
		if c := self.Load(); c != nil {
			if _, err := c.Stats(); err == nil {
				seen.Add(1)
			}
			if seen.Load() >= 3 {
				c.Close() // from inside: the source ends once this fetch returns
			}
		}
		return []Endpoint{{IP: "10.0.0.1", Port: 80, Weight: DefaultWeight}}, nil
	}, WithRefreshInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	self.Store(c)
	eventually(t, "the source to close its client", func() bool { return liveSources.Load() == live })
	if _, err := c.Select(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Select after the source closed the client: %v", err)
	}
	self.Store(nil)
}

func TestARefusedSourceTakesNoOwnership(t *testing.T) {
	live := liveSources.Load()
	if _, err := NewWithSource(nil); !errors.Is(err, ErrNullParameter) {
		t.Fatalf("a nil function: %v", err)
	}
	var calls atomic.Int64
	fetch := func() ([]Endpoint, error) { calls.Add(1); return nil, nil }
	_, err := NewWithSource(fetch, WithOption("no_such_key", "1"))
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "no_such_key") {
		t.Fatalf("an unknown option: %v", err)
	}
	// A key of another source (EAS over TLS) is refused by the library itself.
	_, err = NewWithSource(fetch, WithTLSCAFile("/etc/ca.pem"))
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "tls_ca_file") {
		t.Fatalf("an option the callback source does not take: %v", err)
	}
	if got := liveSources.Load(); got != live {
		t.Fatalf("live sources %d after refusals, want %d", got, live)
	}
	time.Sleep(20 * time.Millisecond)
	if calls.Load() != 0 {
		t.Fatal("a refused source was called")
	}
}

func TestAnUnreachableSourceClientIsFreed(t *testing.T) {
	// Neither closed nor referenced: the cleanup frees the client, which releases the source.
	var released atomic.Bool
	func() {
		marker := new([16]byte)
		runtime.AddCleanup(marker, func(*atomic.Bool) { released.Store(true) }, &released)
		c, err := NewWithSource(func() ([]Endpoint, error) {
			_ = marker[0]
			return []Endpoint{{IP: "10.0.0.1", Port: 80, Weight: DefaultWeight}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(context.Background()); err != nil {
			t.Fatal(err)
		}
	}()
	eventually(t, "the client's cleanup to release its source", func() bool {
		runtime.GC()
		return released.Load()
	})
}

func TestASourceClientSubscribesAndPicksLikeAnyOther(t *testing.T) {
	r := &registry{n: 2}
	c := newSourceClient(t, r.fetch)
	lists := make(chan int, 16)
	cancel, err := c.Subscribe(func(list []Instance) { lists <- len(list) })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if n := <-lists; n != 2 {
		t.Fatalf("first list %d, want 2", n)
	}
	r.set(3, nil, nil)
	deadline := time.After(5 * time.Second)
	for n := 0; n != 3; {
		select {
		case n = <-lists:
		case <-deadline:
			t.Fatal("no list of 3")
		}
	}
	inst, err := c.Select()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReportFailure(inst.ID); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if next, err := c.Select(); err != nil || next.ID == inst.ID {
			t.Fatalf("an ejected instance was picked: %+v, %v", next, err)
		}
	}
}
