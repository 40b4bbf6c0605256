package easdirect

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestAStaticTargetIsReadyAtOnce(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:8001,127.0.0.1:8002")
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	inst, err := c.Select()
	if err != nil {
		t.Fatalf("Select: %v", err)
	}
	if inst.Host != "127.0.0.1:8001" && inst.Host != "127.0.0.1:8002" {
		t.Fatalf("Select picked %+v", inst)
	}
	if inst.IP != "127.0.0.1" || inst.Weight != 100 || inst.ID == 0 {
		t.Fatalf("instance fields: %+v", inst)
	}
}

func TestSelectFollowsTheWeightsOverEveryFullCycle(t *testing.T) {
	runtime.LockOSThread() // each thread walks the cycle on its own
	defer runtime.UnlockOSThread()
	c := mustNew(t, "static://127.0.0.1:1*5,127.0.0.1:2*1")
	counts := map[string]int{}
	for range 600 {
		inst, err := c.Select()
		if err != nil {
			t.Fatal(err)
		}
		counts[inst.Host]++
	}
	if counts["127.0.0.1:1"] != 500 || counts["127.0.0.1:2"] != 100 {
		t.Fatalf("600 picks of weights 5:1 gave %v", counts)
	}
}

func TestSelectReturnsTheSameStringsForTheSameInstance(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1,[::1]:2")
	seen := map[uint64]Instance{}
	for range 100 {
		inst, err := c.Select()
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := seen[inst.ID]; ok && prev != inst {
			t.Fatalf("id %d was %+v, now %+v", inst.ID, prev, inst)
		}
		seen[inst.ID] = inst
	}
	for _, inst := range seen {
		if inst.Host == "[::1]:2" && (inst.IP != "::1" || inst.Port != 2) {
			t.Fatalf("IPv6 instance: %+v", inst)
		}
	}
	if len(seen) != 2 {
		t.Fatalf("picked %d distinct instances, want 2", len(seen))
	}
}

func TestABadTargetIsAnInvalidArgumentNamingIt(t *testing.T) {
	_, err := New("nope://x/y")
	var e *Error
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &e) || !strings.Contains(e.Message, "nope") {
		t.Fatalf("New(nope://...) = %v", err)
	}
	if e.Code != CodeInvalidArgument {
		t.Fatalf("code %v", e.Code)
	}
	if _, err := New("static://127.0.0.1:1\x00,127.0.0.1:2"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a NUL in the target: %v", err)
	}
}

func TestAnUnknownOptionIsRejectedNamingTheKey(t *testing.T) {
	_, err := New("static://127.0.0.1:1", WithOption("refresh_intervall_ms", "50"))
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "refresh_intervall_ms") {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = New("static://127.0.0.1:1", WithRefreshInterval(5*time.Millisecond))
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "refresh_interval_ms") {
		t.Fatalf("refresh below the minimum: %v", err)
	}
	_, err = New("static://127.0.0.1:1", WithEjectionTime(time.Minute, time.Second))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ejection base above max: %v", err)
	}
}

func TestTypedOptionsAreAccepted(t *testing.T) {
	mustNew(t, "static://127.0.0.1:1",
		WithRefreshInterval(time.Second), WithRequestTimeout(500*time.Millisecond),
		WithFailuresBeforeEjection(2), WithEjectionTime(time.Second, time.Minute),
		WithMaxEjectionPercent(30), WithSnapshotFile(t.TempDir()+"/snap.json"))
}

func TestErrorsMatchTheirSentinelByCode(t *testing.T) {
	err := error(&Error{Code: CodeNoInstance, Message: "nothing to pick"})
	if !errors.Is(err, ErrNoInstance) || errors.Is(err, ErrClosed) {
		t.Fatal("errors.Is does not match by code")
	}
	if err.Error() != "easdirect: nothing to pick" {
		t.Fatalf("message %q", err.Error())
	}
	if CodeClosed.String() == "" || Code(12345).String() != "unknown status" {
		t.Fatalf("Code.String: %q %q", CodeClosed.String(), Code(12345).String())
	}
}

func TestSelectBeforeTheFirstListIsNoInstance(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.fail(500)
	c := mustNew(t, d.target())
	if _, err := c.Select(); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Select before any list: %v", err)
	}
	list, err := c.Instances()
	if err != nil || len(list) != 0 {
		t.Fatalf("Instances before any list: %v %v", list, err)
	}
}

func TestWaitReadyStopsAtTheContextDeadlineWithTheFetchError(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.fail(503)
	c := mustNew(t, d.target())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.WaitReady(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitReady: %v", err)
	}
	if !strings.Contains(err.Error(), "503") {
		t.Fatalf("the error does not carry the last fetch error: %v", err)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("WaitReady returned %v after a 300 ms deadline", waited)
	}
}

func TestWaitReadyStopsWhenTheContextIsCancelled(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.fail(500)
	c := mustNew(t, d.target())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := c.WaitReady(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestWaitReadyReturnsOnceTheServiceIsListed(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.fail(500)
	c := mustNew(t, d.target())
	time.AfterFunc(150*time.Millisecond, func() { d.set("127.0.0.1:50001") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if inst, err := c.Select(); err != nil || inst.Host != "127.0.0.1:50001" {
		t.Fatalf("Select: %+v %v", inst, err)
	}
}

func TestDiscoveredListStatsAndLastError(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.set("127.0.0.1:50001", "127.0.0.1:50002", "127.0.0.1:50003")
	c := mustNew(t, d.target())
	if c.Service() != "svc" {
		t.Fatalf("Service() = %q", c.Service())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := c.Instances()
	if err != nil || len(list) != 3 {
		t.Fatalf("Instances: %v %v", list, err)
	}
	st, err := c.Stats()
	if err != nil || st.Instances != 3 || st.Generation < 1 || st.RefreshOK < 1 || st.LastOK.IsZero() {
		t.Fatalf("Stats: %+v %v", st, err)
	}
	if err := c.LastError(); err != nil {
		t.Fatalf("LastError after a good fetch: %v", err)
	}

	// A failing upstream keeps the cache, and LastError names the status.
	d.fail(500)
	eventually(t, "a failed fetch", func() bool { return c.LastError() != nil })
	err = c.LastError()
	if !errors.Is(err, ErrDiscoveryFailed) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("LastError: %v", err)
	}
	if list, _ := c.Instances(); len(list) != 3 {
		t.Fatalf("the cache was not kept: %v", list)
	}
	if _, err := c.Select(); err != nil {
		t.Fatalf("Select while discovery fails: %v", err)
	}
}

func TestSelectExcludingNeverReturnsAnExcludedInstance(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
	list, _ := c.Instances()
	for range 100 {
		inst, err := c.SelectExcluding(list[0].ID, list[2].ID)
		if err != nil || inst.ID != list[1].ID {
			t.Fatalf("SelectExcluding: %+v %v", inst, err)
		}
	}
	if _, err := c.SelectExcluding(list[0].ID, list[1].ID, list[2].ID); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("everything excluded: %v", err)
	}
	if _, err := c.SelectExcluding(); err != nil {
		t.Fatalf("nothing excluded: %v", err)
	}
}

func TestAFailedInstanceIsEjected(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
	list, _ := c.Instances()
	bad := list[1].ID
	if err := c.ReportFailure(bad); err != nil {
		t.Fatal(err)
	}
	for range 300 {
		if inst, _ := c.Select(); inst.ID == bad {
			t.Fatal("an ejected instance was picked")
		}
	}
	if st, _ := c.Stats(); st.Ejected != 1 {
		t.Fatalf("Stats.Ejected = %d", st.Ejected)
	}
	if err := c.ReportSuccess(bad); err != nil {
		t.Fatal(err)
	}
	if err := c.ReportFailure(12345); !errors.Is(err, ErrUnknownInstance) {
		t.Fatalf("an unknown id: %v", err)
	}
}

func TestCloseIsIdempotentAndSafeToRaceWithEveryCall(t *testing.T) {
	for range 20 {
		c, err := New("static://127.0.0.1:1,127.0.0.1:2")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if inst, err := c.Select(); err == nil {
						c.ReportSuccess(inst.ID)
					} else if !errors.Is(err, ErrClosed) {
						t.Errorf("Select: %v", err)
						return
					}
					c.Instances()
					c.Stats()
				}
			}()
		}
		for range 3 {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Select after Close: %v", err)
		}
		if _, err := c.Subscribe(func([]Instance) {}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Subscribe after Close: %v", err)
		}
		if err := c.WaitReady(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitReady after Close: %v", err)
		}
	}
}

func TestAnUnreachableClientIsFreed(t *testing.T) {
	// The subscription of a client that is neither closed nor cancelled ends only when the
	// cleanup frees the client; then its callback becomes unreachable, and so does marker.
	var ended atomic.Bool
	func() {
		c, err := New("static://127.0.0.1:1")
		if err != nil {
			t.Fatal(err)
		}
		marker := new([16]byte)
		runtime.AddCleanup(marker, func(*atomic.Bool) { ended.Store(true) }, &ended)
		if _, err := c.Subscribe(func([]Instance) { _ = marker[0] }); err != nil {
			t.Fatal(err)
		}
	}()
	eventually(t, "the client's cleanup to end its subscription", func() bool {
		runtime.GC()
		return ended.Load()
	})
}

func TestSubscribeSeesTheListAndEveryChange(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.set("127.0.0.1:50001")
	c := mustNew(t, d.target())
	lists := make(chan []Instance, 16)
	cancel, err := c.Subscribe(func(l []Instance) { lists <- l })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	next := func() []Instance {
		select {
		case l := <-lists:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no callback within 5 s")
			return nil
		}
	}
	if l := next(); len(l) != 1 || l[0].Host != "127.0.0.1:50001" {
		t.Fatalf("first list: %+v", l)
	}
	d.set("127.0.0.1:50001", "127.0.0.1:50002")
	if l := next(); len(l) != 2 {
		t.Fatalf("second list: %+v", l)
	}
}

func TestNoCallbackRunsAfterCancelReturns(t *testing.T) {
	d := newDiscovery(t, "svc")
	c := mustNew(t, d.target())
	subs := liveSubscriptions.Load()
	var calls atomic.Int64
	var after atomic.Bool
	cancel, err := c.Subscribe(func([]Instance) {
		if after.Load() {
			t.Error("a callback ran after cancel returned")
		}
		calls.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Change the list often, so that a callback is likely running when cancel is called.
	for i := range 20 {
		d.set("127.0.0.1:" + itoa(50000+i))
		time.Sleep(5 * time.Millisecond)
	}
	eventually(t, "a callback", func() bool { return calls.Load() > 0 })
	cancel()
	after.Store(true)
	cancel() // idempotent
	if got := liveSubscriptions.Load(); got != subs {
		t.Fatalf("live subscriptions %d after cancel, want %d", got, subs)
	}
	for i := range 5 {
		d.set("127.0.0.1:" + itoa(51000+i))
		time.Sleep(30 * time.Millisecond)
	}
}

func TestACallbackMayUseTheClientAndCancelItself(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1,127.0.0.1:2")
	subs := liveSubscriptions.Load()
	done := make(chan error, 1)
	var cancel func()
	var ready sync.WaitGroup
	ready.Add(1)
	var err error
	cancel, err = c.Subscribe(func(l []Instance) {
		ready.Wait()
		_, err := c.Select()
		if err == nil {
			_, err = c.Stats()
		}
		cancel()
		done <- err
	})
	if err != nil {
		t.Fatal(err)
	}
	ready.Done()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no callback")
	}
	eventually(t, "the subscription's end", func() bool { return liveSubscriptions.Load() == subs })
}

func TestACallbackMayCloseTheClient(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1")
	subs := liveSubscriptions.Load()
	closed := make(chan struct{})
	if _, err := c.Subscribe(func([]Instance) {
		c.Close()
		close(closed)
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close from inside a callback did not return")
	}
	if _, err := c.Select(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Select after Close: %v", err)
	}
	eventually(t, "the subscription's end", func() bool { return liveSubscriptions.Load() == subs })
}

func TestCloseEndsSubscriptions(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1")
	subs := liveSubscriptions.Load()
	got := make(chan struct{}, 1)
	if _, err := c.Subscribe(func([]Instance) {
		select {
		case got <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	<-got
	c.Close()
	if n := liveSubscriptions.Load(); n != subs {
		t.Fatalf("live subscriptions %d after Close, want %d", n, subs)
	}
}

func TestTheABICheckExplainsAMismatch(t *testing.T) {
	if err := checkABI(ABIVersion(), Version()); err != nil {
		t.Fatalf("the loaded library: %v", err)
	}
	if err := checkABI(abiMajor<<16|(abiMinor+7), "x"); err != nil {
		t.Fatalf("a newer minor must be accepted: %v", err)
	}
	err := checkABI((abiMajor+1)<<16, "9.0.0")
	if !errors.Is(err, ErrABIMismatch) || !strings.Contains(err.Error(), "9.0.0") ||
		!strings.Contains(err.Error(), fmt.Sprintf("built for ABI %d.%d", abiMajor, abiMinor)) {
		t.Fatalf("another major: %v", err)
	}
	// NewWithSource (eas_client_new_with_source) came with ABI 1.1: a 1.0 library lacks it.
	if abiMajor != 1 || abiMinor < 1 {
		t.Fatalf("this binding needs ABI 1.x with x >= 1, the header says %d.%d", abiMajor, abiMinor)
	}
	if err := checkABI(abiMajor<<16|(abiMinor-1), "x"); !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("an older minor: %v", err)
	}
	if err := checkABI(1<<16, "0.1.0"); !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("ABI 1.0 has no callback source: %v", err)
	}
}

func TestServiceNameOfEachTargetForm(t *testing.T) {
	for target, want := range map[string]string{
		"eas://127.0.0.1:1/my_service":           "my_service",
		"eas+https://127.0.0.1:1/svc":            "svc",
		"nacos://127.0.0.1:1,127.0.0.1:2/svc":    "svc",
		"dns://my-svc.ns.svc.cluster.local:8000": "my-svc.ns.svc.cluster.local",
		"static://127.0.0.1:1*5,127.0.0.1:2":     "",
	} {
		c, err := New(target, WithRequestTimeout(50*time.Millisecond))
		if err != nil {
			t.Fatalf("New(%q): %v", target, err)
		}
		if got := c.Service(); got != want {
			t.Errorf("Service() of %q = %q, want %q", target, got, want)
		}
		c.Close()
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestMetricsTextNamesTheTargetAndSaysErrClosedAfterClose(t *testing.T) {
	c := mustNew(t, "static://127.0.0.1:1,127.0.0.1:2")
	text, err := c.MetricsText()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE easdirect_instances gauge\n",
		`easdirect_instances{target="static://127.0.0.1:1,127.0.0.1:2"} 2` + "\n",
		`easdirect_instance_weight{target="static://127.0.0.1:1,127.0.0.1:2",instance="127.0.0.1:2"} 100` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Fatalf("no %q in\n%s", want, text)
		}
	}
	c.Close()
	if _, err := c.MetricsText(); !errors.Is(err, ErrClosed) {
		t.Fatalf("MetricsText after Close: %v", err)
	}
	var zero Client
	if _, err := zero.MetricsText(); !errors.Is(err, ErrClosed) {
		t.Fatalf("MetricsText of a zero Client: %v", err)
	}
}
