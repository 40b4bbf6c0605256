package easdirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// serviceOf starts n instances listed by an emulated discovery API and a client of them.
func serviceOf(t *testing.T, n int, opts ...Option) (*Client, []*instanceServer) {
	t.Helper()
	insts := make([]*instanceServer, n)
	for i := range insts {
		insts[i] = newInstance(t)
	}
	d := newDiscovery(t, "svc")
	d.set(hostsOf(insts...)...)
	c := mustNew(t, d.target(), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c, insts
}

func httpClient(c *Client, opts ...TransportOption) *http.Client {
	return &http.Client{Transport: c.Transport(nil, opts...)}
}

func post(t *testing.T, hc *http.Client, body string) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Post("http://svc/api/predict/svc?v=1", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func totalHits(insts []*instanceServer) int64 {
	var n int64
	for _, s := range insts {
		n += s.hits.Load()
	}
	return n
}

func TestTheTransportSendsServiceRequestsToAnInstance(t *testing.T) {
	c, insts := serviceOf(t, 2)
	other := newInstance(t)
	hc := httpClient(c)
	resp, body := post(t, hc, "hello")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	host := resp.Header.Get("X-Instance")
	if host != insts[0].host() && host != insts[1].host() {
		t.Fatalf("answered by %q", host)
	}
	if want := host + " /api/predict/svc?v=1 hello"; body != want {
		t.Fatalf("body %q, want %q (path, query and body kept)", body, want)
	}
	// Another host goes through unchanged.
	resp, err := hc.Get("http://" + other.host() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if other.hits.Load() != 1 {
		t.Fatal("a request to another host was not passed through")
	}
}

func TestAStaticTargetIsReachedThroughAnAlias(t *testing.T) {
	inst := newInstance(t)
	c := mustNew(t, staticTarget(inst.host()))
	hc := httpClient(c, WithHostAliases("My-Service"))
	resp, err := hc.Get("http://my-service:8080/api/predict/my-service")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if inst.hits.Load() != 1 {
		t.Fatal("the alias was not rewritten")
	}
}

func TestEveryRequestSucceedsWhileOneOfThreeInstancesFailsThenDies(t *testing.T) {
	// A long ejection, so that the failing instance is retried only when it is reported again.
	c, insts := serviceOf(t, 3, WithEjectionTime(200*time.Millisecond, time.Second))
	hc := httpClient(c)
	bad := insts[1]
	bad.status.Store(503)
	for i := range 150 {
		if i == 75 {
			bad.kill()
		}
		resp, body := post(t, hc, "payload")
		if resp.StatusCode != 200 || !strings.HasSuffix(body, " payload") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if i%10 == 0 {
			time.Sleep(25 * time.Millisecond) // let ejections expire, so the bad one is tried again
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the failing instance was never tried: the test proves nothing")
	}
}

func TestNoRequestReachesAnEjectedInstanceDuringItsEjection(t *testing.T) {
	const ejection = 1500 * time.Millisecond
	c, insts := serviceOf(t, 3, WithEjectionTime(ejection, 10*ejection))
	hc := httpClient(c)
	bad := insts[0]
	bad.status.Store(503)
	// Send until the bad instance has answered once: it is ejected from then on.
	for bad.hits.Load() == 0 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	ejectedAt := time.Now()
	hits := bad.hits.Load()
	n := 0
	for time.Since(ejectedAt) < ejection*2/3 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		n++
	}
	if got := bad.hits.Load(); got != hits {
		t.Fatalf("the ejected instance received %d of %d requests during its ejection", got-hits, n)
	}
	if st, _ := c.Stats(); st.Ejected != 1 {
		t.Fatalf("Stats.Ejected = %d", st.Ejected)
	}
	// Once the ejection has ended (picked again at most 1 s after), it receives requests again.
	bad.status.Store(0)
	eventually(t, "the instance's return after its ejection", func() bool {
		post(t, hc, "x")
		return bad.hits.Load() > hits
	})
}

func TestA4xxIsReturnedAtOnceAndNotRetried(t *testing.T) {
	c, insts := serviceOf(t, 3)
	for _, s := range insts {
		s.status.Store(404)
	}
	hc := httpClient(c)
	for i := range 10 {
		resp, _ := post(t, hc, "x")
		if resp.StatusCode != 404 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := totalHits(insts); got != int64(i+1) {
			t.Fatalf("%d requests reached the instances %d times", i+1, got)
		}
	}
	if st, _ := c.Stats(); st.Ejected != 0 {
		t.Fatalf("a 4xx ejected %d instances", st.Ejected)
	}
}

func TestA429IsRetriedOnAnotherInstance(t *testing.T) {
	c, insts := serviceOf(t, 2)
	insts[0].status.Store(429)
	hc := httpClient(c)
	for range 10 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func TestAttemptsStopAtThreeAndAtTheNumberOfInstances(t *testing.T) {
	c, insts := serviceOf(t, 5, WithMaxEjectionPercent(0))
	for _, s := range insts {
		s.status.Store(500)
	}
	resp, _ := post(t, httpClient(c), "x")
	if resp.StatusCode != 500 || totalHits(insts) != 3 {
		t.Fatalf("status %d after %d attempts; want the last 500 after 3", resp.StatusCode, totalHits(insts))
	}

	c2, insts2 := serviceOf(t, 2, WithMaxEjectionPercent(0))
	for _, s := range insts2 {
		s.status.Store(502)
	}
	resp, _ = post(t, httpClient(c2, WithMaxAttempts(10)), "x") // a cap on top of the core's
	if resp.StatusCode != 502 || totalHits(insts2) != 2 {
		t.Fatalf("status %d after %d attempts; want 502 after 2", resp.StatusCode, totalHits(insts2))
	}
	resp, _ = post(t, httpClient(c2, WithMaxAttempts(1)), "x")
	if resp.StatusCode != 502 || totalHits(insts2) != 3 {
		t.Fatalf("WithMaxAttempts(1): status %d, %d attempts in all; want 502 after 1 more", resp.StatusCode, totalHits(insts2))
	}
}

func TestTheBodyIsReplayedOnEveryAttempt(t *testing.T) {
	c, insts := serviceOf(t, 3, WithMaxEjectionPercent(0))
	insts[0].status.Store(503)
	insts[1].status.Store(503)
	payload := strings.Repeat("0123456789", 1000)
	req, _ := http.NewRequest("POST", "http://svc/api/predict/svc", bytes.NewReader([]byte(payload)))
	resp, err := httpClient(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, s := range insts {
		s.mu.Lock()
		for _, b := range s.bodies {
			if b != payload {
				t.Errorf("an attempt carried %d bytes of %d", len(b), len(payload))
			}
		}
		s.mu.Unlock()
	}
}

func TestABodyThatCannotBeReplayedIsSentOnce(t *testing.T) {
	c, insts := serviceOf(t, 2, WithMaxEjectionPercent(0))
	for _, s := range insts {
		s.status.Store(503)
	}
	body := io.MultiReader(strings.NewReader("x")) // no GetBody
	req, _ := http.NewRequest("POST", "http://svc/p", body)
	resp, err := httpClient(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || totalHits(insts) != 1 {
		t.Fatalf("status %d after %d attempts", resp.StatusCode, totalHits(insts))
	}
}

func TestIdempotentRetriesOnlyLeavesPostsAlone(t *testing.T) {
	c, insts := serviceOf(t, 2, WithMaxEjectionPercent(0))
	for _, s := range insts {
		s.status.Store(503)
	}
	hc := httpClient(c, WithIdempotentRetriesOnly())
	resp, _ := post(t, hc, "x")
	if resp.StatusCode != 503 || totalHits(insts) != 1 {
		t.Fatalf("POST: status %d after %d attempts", resp.StatusCode, totalHits(insts))
	}
	resp, err := hc.Get("http://svc/p")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if totalHits(insts) != 3 {
		t.Fatalf("GET was not retried: %d hits in all", totalHits(insts))
	}
}

func TestAConnectionErrorIsRetriedAndReported(t *testing.T) {
	c, insts := serviceOf(t, 2)
	insts[0].kill()
	hc := httpClient(c)
	for range 10 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if st, _ := c.Stats(); st.Ejected != 1 {
		t.Fatalf("the dead instance is not ejected: %+v", st)
	}
	// With no instance left alive, the last connection error comes back.
	insts[1].kill()
	_, err := httpClient(c).Get("http://svc/p")
	if err == nil || !strings.Contains(err.Error(), "easdirect") {
		t.Fatalf("GET with every instance dead: %v", err)
	}
}

func TestTheRequestContextBoundsEveryAttempt(t *testing.T) {
	c, insts := serviceOf(t, 2)
	for _, s := range insts {
		s.hang.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/p", nil)
	start := time.Now()
	_, err := httpClient(c).Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET to hung instances: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the context's deadline was not honoured")
	}
	if totalHits(insts) != 1 {
		t.Fatalf("%d attempts after the deadline, want 1", totalHits(insts))
	}
	// A deadline counts as the instance's failure; a cancellation does not.
	if st, _ := c.Stats(); st.Ejected != 1 {
		t.Fatalf("Stats.Ejected = %d after a deadline", st.Ejected)
	}
}

func TestACancelledRequestReportsNothing(t *testing.T) {
	c, insts := serviceOf(t, 2)
	for _, s := range insts {
		s.hang.Store(true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/p", nil)
	if _, err := httpClient(c).Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("GET: %v", err)
	}
	if st, _ := c.Stats(); st.Ejected != 0 {
		t.Fatalf("a cancellation ejected %d instances", st.Ejected)
	}
}

func TestAnAttemptTimeoutMovesOnToAnotherInstance(t *testing.T) {
	c, insts := serviceOf(t, 2)
	insts[0].hang.Store(true)
	hc := httpClient(c, WithAttemptTimeout(200*time.Millisecond))
	for range 4 {
		resp, body := post(t, hc, "x")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, insts[1].host()) {
			t.Fatalf("status %d from %q", resp.StatusCode, body)
		}
	}
}

func TestNoInstanceIsAnError(t *testing.T) {
	d := newDiscovery(t, "svc")
	d.fail(500)
	c := mustNew(t, d.target())
	_, err := httpClient(c).Get("http://svc/p")
	if !errors.Is(err, ErrNoInstance) {
		t.Fatalf("GET before any list: %v", err)
	}
}

func TestTheAttemptTimeoutIsOnByDefault(t *testing.T) {
	// A caller with only http.Client.Timeout (longer than a minute) still moves past a hung pick.
	tr := (&Client{}).Transport(nil).(*transport)
	if tr.attemptTimeout != DefaultAttemptTimeout || DefaultAttemptTimeout != time.Minute {
		t.Fatalf("default attempt timeout %v", tr.attemptTimeout)
	}
}

func TestTheTokenIsNeverPrinted(t *testing.T) {
	const token = "tok-very-secret"
	c, insts := serviceOf(t, 1)
	insts[0].kill()
	tr := c.Transport(nil, WithToken(token))
	for _, s := range []string{fmt.Sprint(tr), fmt.Sprintf("%+v", tr), fmt.Sprintf("%#v", tr)} {
		if strings.Contains(s, token) {
			t.Fatalf("printed: %s", s)
		}
	}
	_, err := (&http.Client{Transport: tr}).Get("http://svc/x")
	if err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("error: %v", err)
	}
}

func TestAnAffinityFunctionKeepsAKeyOnOneInstance(t *testing.T) {
	c, insts := serviceOf(t, 4)
	hc := httpClient(c, WithAffinityKey(func(r *http.Request) []byte { return []byte(r.URL.Query().Get("user")) }))
	seen := map[string]bool{}
	for range 12 {
		resp, err := hc.Get("http://svc/chat?user=u-7")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen[resp.Header.Get("X-Instance")] = true
	}
	if len(seen) != 1 || totalHits(insts) != 12 {
		t.Fatalf("one key reached %d instances (%d hits)", len(seen), totalHits(insts))
	}
}

// oneShotReader is a body that reads once (no GetBody, no Seek).
type oneShotReader struct{ r io.Reader }

func (o *oneShotReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestAOneShotBodyIsRetriedWholeAfterARefusedConnection(t *testing.T) {
	c, insts := serviceOf(t, 2, WithMaxEjectionPercent(0))
	insts[0].kill() // refuses: nothing of the body was read
	payload := strings.Repeat("abcdefghij", 300)
	for i := range 20 {
		req, _ := http.NewRequest("POST", "http://svc/p", &oneShotReader{strings.NewReader(payload)})
		resp, err := httpClient(c).Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := insts[1].host() + " /p? " + payload; resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("request %d: %d, %d bytes echoed of %d", i, resp.StatusCode, len(b), len(want))
		}
	}
	stats, _ := c.InstanceStats()
	refused := uint64(0)
	for _, s := range stats {
		refused += s.Failures
	}
	if refused == 0 {
		t.Fatal("the dead instance was never picked: the test proves nothing")
	}
}

func TestAFileBodyIsSentWholeOnEveryAttempt(t *testing.T) {
	c, insts := serviceOf(t, 3, WithMaxEjectionPercent(0))
	insts[0].status.Store(503)
	insts[1].status.Store(503)
	insts[2].status.Store(503)
	path := t.TempDir() + "/body"
	payload := strings.Repeat("0123456789", 7000)
	if err := os.WriteFile(path, []byte("skipped:"+payload), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Seek(int64(len("skipped:")), io.SeekStart) // sent from where the file stands
	req, _ := http.NewRequest("POST", "http://svc/upload", f)
	resp, err := httpClient(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if totalHits(insts) != 3 {
		t.Fatalf("%d attempts, want 3", totalHits(insts))
	}
	for _, s := range insts {
		s.mu.Lock()
		for _, b := range s.bodies {
			if b != payload {
				t.Errorf("an attempt carried %d bytes of %d", len(b), len(payload))
			}
		}
		s.mu.Unlock()
	}
	if _, err := f.Read(make([]byte, 1)); err == nil {
		t.Error("the file body was not closed")
	}
}

func TestABodyCutByTheInstanceCountsAsItsFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		w.Write([]byte("only a part"))
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	c := mustNew(t, staticTarget(srv.Listener.Addr().String()))
	resp, err := httpClient(c, WithHostAliases("svc")).Get("http://svc/stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a cut body read to its end")
	}
	resp.Body.Close()
	stats, _ := c.InstanceStats()
	if len(stats) != 1 || stats[0].Failures != 1 || stats[0].InFlight != 0 {
		t.Fatalf("after a cut body: %+v", stats)
	}
}

func TestAResponseBodyClosedEarlyEndsTheAttempt(t *testing.T) {
	c, _ := serviceOf(t, 2)
	resp, err := httpClient(c).Get("http://svc/x")
	if err != nil {
		t.Fatal(err)
	}
	if n := inFlight(t, c); n != 1 {
		t.Fatalf("%d in flight before the body is read, want 1", n)
	}
	resp.Body.Close()
	resp.Body.Close() // a second Close does nothing more
	stats, _ := c.InstanceStats()
	for _, s := range stats {
		if s.InFlight != 0 || s.Failures != 0 {
			t.Fatalf("after an early close: %+v", stats)
		}
	}
}

func TestABodyThatFailsToReplayLeavesTheCallerTheLastAnswer(t *testing.T) {
	c, insts := serviceOf(t, 2, WithMaxEjectionPercent(0))
	for _, s := range insts {
		s.status.Store(503)
	}
	req, _ := http.NewRequest("POST", "http://svc/p", strings.NewReader("x"))
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
	resp, err := httpClient(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || totalHits(insts) != 1 {
		t.Fatalf("status %d after %d attempts; want the one 503", resp.StatusCode, totalHits(insts))
	}
	if n := inFlight(t, c); n != 0 {
		t.Fatalf("%d in flight", n)
	}
}

func TestAClientTimeoutMidBodyIsNotTheInstancesFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for range 50 {
			if _, err := w.Write([]byte("data: tok\n\n")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	c := mustNew(t, staticTarget(srv.Listener.Addr().String()))
	hc := &http.Client{Transport: c.Transport(nil, WithHostAliases("svc")), Timeout: 200 * time.Millisecond}
	resp, err := hc.Get("http://svc/stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("the stream outlived the client's timeout")
	}
	resp.Body.Close()
	stats, _ := c.InstanceStats()
	if len(stats) != 1 || stats[0].Failures != 0 || stats[0].InFlight != 0 {
		t.Fatalf("after the caller's timeout mid-body: %+v", stats)
	}
}

func TestAClientTimeoutBeforeTheHeadersIsATimeout(t *testing.T) {
	c, insts := serviceOf(t, 2)
	for _, s := range insts {
		s.hang.Store(true)
	}
	hc := &http.Client{Transport: c.Transport(nil), Timeout: 300 * time.Millisecond}
	_, err := hc.Get("http://svc/p")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("GET to hung instances: %v, want a timeout", err)
	}
	if totalHits(insts) != 1 {
		t.Fatalf("%d attempts after the client's timeout, want 1", totalHits(insts))
	}
	if n := inFlight(t, c); n != 0 {
		t.Fatalf("%d in flight", n)
	}
}

func TestConcurrentRequestsShareTheTransport(t *testing.T) {
	c, insts := serviceOf(t, 3)
	insts[0].status.Store(503)
	hc := httpClient(c, WithAffinityHeader("X-Session-Id"))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				req, _ := http.NewRequest("POST", "http://svc/p", strings.NewReader("x"))
				if g%2 == 0 {
					req.Header.Set("X-Session-Id", fmt.Sprintf("s-%d", g))
				}
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				if i%3 == 0 {
					resp.Body.Close() // unread: dropped
				} else {
					io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := inFlight(t, c); n != 0 {
		t.Fatalf("%d in flight after every body was closed", n)
	}
}
