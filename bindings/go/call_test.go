package easdirect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// These tests drive calls the way a user with their own HTTP stack does, against real local
// backends of the emulator (emulator_test.go); the library decides, the backends' hit counts
// and the client's InstanceStats are the oracle.

// addBackends starts n backends of the emulator under service (extra: more fields of the
// control request, e.g. kind and llm) and returns their ports.
func (e *emulator) addBackends(t *testing.T, service string, n int, extra map[string]any) []int {
	t.Helper()
	body := map[string]any{"service": service, "count": n}
	for k, v := range extra {
		body[k] = v
	}
	var ports []int
	for _, b := range strings.Split(string(e.do(t, "POST", "/backends", body)), "\"port\":")[1:] {
		var p int
		fmt.Sscanf(b, "%d", &p)
		ports = append(ports, p)
	}
	if len(ports) != n {
		t.Fatalf("started %d backends of %d", len(ports), n)
	}
	return ports
}

// readyClient is a client of service on e, with a list known.
func readyClient(t *testing.T, e *emulator, service string, opts ...Option) *Client {
	t.Helper()
	c := mustNew(t, e.target(service), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// callClient is a transport of its own per test, so that no connection outlives its backend.
func callClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// send is one attempt on inst: the outcome and status to record, and the response (nil when
// none came), whose body the caller closes.
func send(hc *http.Client, inst Instance, header http.Header) (Outcome, int, *http.Response) {
	req, _ := http.NewRequest("POST", "http://"+inst.Host+"/api/predict/svc", strings.NewReader(`{"x":1}`))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	switch {
	case err == nil:
		return OutcomeResponse, resp.StatusCode, resp
	case strings.Contains(err.Error(), "connection refused"):
		return OutcomeConnectFailed, 0, nil
	default:
		return OutcomeReset, 0, nil
	}
}

// drive runs one call to its end, as a user's request loop does: the instances tried, and
// the status of the answer (0 when none came).
func drive(t *testing.T, hc *http.Client, call *Call) (tried []Instance, status int) {
	t.Helper()
	defer call.Close()
	for {
		inst, err := call.Next()
		if errors.Is(err, ErrNoInstance) && len(tried) > 0 {
			return tried, status // the library ended it after a retryable last attempt
		}
		if err != nil {
			t.Fatalf("Next after %d attempts: %v", len(tried), err)
		}
		tried = append(tried, inst)
		outcome, code, resp := send(hc, inst, nil)
		status = code
		var header http.Header
		if resp != nil {
			header = resp.Header
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		retry, err := call.Record(outcome, code, header)
		if err != nil {
			t.Fatalf("Record(%v, %d): %v", outcome, code, err)
		}
		if !retry {
			if err := call.Finish(BodyDone); err != nil {
				t.Fatal(err)
			}
			return tried, status
		}
	}
}

func distinct(t *testing.T, tried []Instance) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, inst := range tried {
		if seen[inst.ID] {
			t.Fatalf("the call gave %s twice: %+v", inst.Host, tried)
		}
		seen[inst.ID] = true
	}
}

func (e *emulator) totalHits(t *testing.T, ports []int) (n int64) {
	for _, b := range e.backends(t) {
		for _, p := range ports {
			if b.Port == p {
				n += b.Hits
			}
		}
	}
	return n
}

// inFlight is the sum of InFlight over c's instances.
func inFlight(t *testing.T, c *Client) (n uint32) {
	t.Helper()
	stats, err := c.InstanceStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stats {
		n += s.InFlight
	}
	return n
}

func TestCallRetriesA503OnAnotherInstanceWithinTheBudgetAndA404NotAtAll(t *testing.T) {
	e := startEmulator(t, "svc", 1)
	hc := callClient(t)
	ports := e.addBackends(t, "five", 5, nil)
	for _, p := range ports {
		e.setMode(t, p, "status", 503)
	}
	for _, tc := range []struct {
		maxAttempts, want int
	}{{3, 3}, {2, 2}, {9, 5}} { // never more than the instances
		c := readyClient(t, e, "five", WithOption("max_attempts", fmt.Sprint(tc.maxAttempts)))
		call, err := c.Call(nil)
		if err != nil {
			t.Fatal(err)
		}
		before := e.totalHits(t, ports)
		tried, status := drive(t, hc, call)
		distinct(t, tried)
		if len(tried) != tc.want || status != 503 {
			t.Fatalf("max_attempts %d: %d attempts, last status %d; want %d attempts",
				tc.maxAttempts, len(tried), status, tc.want)
		}
		if got := e.totalHits(t, ports) - before; got != int64(tc.want) {
			t.Fatalf("max_attempts %d: the backends saw %d requests", tc.maxAttempts, got)
		}
		if n := inFlight(t, c); n != 0 {
			t.Fatalf("%d attempts still in flight", n)
		}
		c.Close()
	}

	for _, p := range ports {
		e.setMode(t, p, "status", 404)
	}
	c := readyClient(t, e, "five")
	call, _ := c.Call(nil)
	if tried, status := drive(t, hc, call); len(tried) != 1 || status != 404 {
		t.Fatalf("a 404: %d attempts, status %d", len(tried), status)
	}
}

func TestANotIdempotentCallRetriesOnlyWhenNothingWasSent(t *testing.T) {
	e := startEmulator(t, "svc", 1)
	hc := callClient(t)
	failing := e.addBackends(t, "failing", 3, nil)
	for _, p := range failing {
		e.setMode(t, p, "status", 503)
	}
	dead := e.addBackends(t, "dead", 3, nil)
	for _, p := range dead {
		e.setMode(t, p, "dead", 0)
	}

	c := readyClient(t, e, "failing")
	call, _ := c.Call(nil, CallNotIdempotent())
	if tried, status := drive(t, hc, call); len(tried) != 1 || status != 503 {
		t.Fatalf("a 503 of a not-idempotent call: %d attempts, status %d", len(tried), status)
	}

	c = readyClient(t, e, "dead")
	call, _ = c.Call(nil, CallNotIdempotent())
	tried, status := drive(t, hc, call)
	distinct(t, tried)
	if len(tried) != 3 || status != 0 {
		t.Fatalf("refused connections of a not-idempotent call: %d attempts, status %d", len(tried), status)
	}
}

func TestAKeyedCallGivesTheSameInstanceForTheSameKey(t *testing.T) {
	e := startEmulator(t, "svc", 5)
	hc := callClient(t)
	c := readyClient(t, e, "svc")
	for _, key := range []string{"session-1", "session-2", "a conversation id"} {
		var first Instance
		for i := range 5 {
			call, err := c.Call([]byte(key))
			if err != nil {
				t.Fatal(err)
			}
			tried, status := drive(t, hc, call)
			if len(tried) != 1 || status != 200 {
				t.Fatalf("key %q: %d attempts, status %d", key, len(tried), status)
			}
			if i == 0 {
				first = tried[0]
			} else if tried[0].ID != first.ID {
				t.Fatalf("key %q went to %s, then to %s", key, first.Host, tried[0].Host)
			}
		}
	}
}

func TestInFlightCountsReturnToZeroOnEveryPath(t *testing.T) {
	e := startEmulator(t, "svc", 3)
	hc := callClient(t)
	c := readyClient(t, e, "svc")
	check := func(path string) {
		t.Helper()
		if n := inFlight(t, c); n != 0 {
			t.Fatalf("after %s: %d attempts in flight", path, n)
		}
	}

	// Record, then Finish: in flight until the body is over.
	call, _ := c.Call(nil)
	inst, err := call.Next()
	if err != nil {
		t.Fatal(err)
	}
	if n := inFlight(t, c); n != 1 {
		t.Fatalf("an attempt after Next: %d in flight", n)
	}
	_, code, resp := send(hc, inst, nil)
	if retry, err := call.Record(OutcomeResponse, code, resp.Header); err != nil || retry {
		t.Fatalf("Record(200): %v %v", retry, err)
	}
	if n := inFlight(t, c); n != 1 {
		t.Fatalf("a recorded attempt whose body is not over: %d in flight", n)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := call.Finish(BodyDone); err != nil {
		t.Fatal(err)
	}
	check("Record and Finish")
	if _, err := call.Next(); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Next after a 200: %v, want ErrNoInstance", err)
	}
	call.Close()

	// Closed in the middle of an attempt (nothing recorded), twice.
	call, _ = c.Call(nil)
	if _, err := call.Next(); err != nil {
		t.Fatal(err)
	}
	call.Close()
	call.Close()
	check("Close mid-attempt")
	if _, err := call.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next of a closed call: %v", err)
	}

	// Dropped unclosed: the cleanup frees it.
	func() {
		call, _ := c.Call(nil)
		if _, err := call.Next(); err != nil {
			t.Fatal(err)
		}
	}()
	eventually(t, "the cleanup of a dropped call", func() bool {
		runtime.GC()
		return inFlight(t, c) == 0
	})

	// The client closed mid-call: the open attempt can no longer go on, the recorded one's
	// response is not lost.
	open, _ := c.Call(nil)
	recorded, _ := c.Call(nil)
	if _, err := open.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := recorded.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := recorded.Record(OutcomeResponse, 200, nil); err != nil {
		t.Fatal(err)
	}
	if n := inFlight(t, c); n != 2 {
		t.Fatalf("two attempts: %d in flight", n)
	}
	c.Close()
	if retry, err := open.Record(OutcomeConnectFailed, 0, nil); err != nil || retry {
		t.Fatalf("Record after the client's Close: retry %v, %v", retry, err)
	}
	if _, err := open.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after the client's Close: %v", err)
	}
	if err := recorded.Finish(BodyBroken); err != nil {
		t.Fatalf("Finish after the client's Close: %v", err)
	}
	if _, err := c.Call(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}
	if _, err := c.InstanceStats(); !errors.Is(err, ErrClosed) {
		t.Fatalf("InstanceStats after Close: %v", err)
	}
	open.Close()
	recorded.Close()
}

func TestALoadReportReachesInstanceStats(t *testing.T) {
	e := startEmulator(t, "svc", 1)
	hc := callClient(t)
	e.addBackends(t, "llm", 2, map[string]any{"kind": "llm",
		"llm": map[string]any{"slots": 2, "speed": 0.5, "base_ms": 1, "per_token_ms": 0, "mean_tokens": 1}})
	c := readyClient(t, e, "llm")
	call, _ := c.Call(nil)
	defer call.Close()
	inst, err := call.Next()
	if err != nil {
		t.Fatal(err)
	}
	_, code, resp := send(hc, inst, http.Header{"Endpoint-Load-Metrics-Format": {"text"}})
	if code != 200 || resp.Header.Get("Endpoint-Load-Metrics") == "" {
		t.Fatalf("the LLM backend answered %d without a load report: %v", code, resp.Header)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := call.Record(OutcomeResponse, code, resp.Header); err != nil {
		t.Fatal(err)
	}
	call.Finish(BodyDone)
	stats, err := c.InstanceStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stats {
		if s.ID != inst.ID {
			continue
		}
		if s.LastReport.IsZero() || s.Attempts != 1 || s.InFlight != 0 || s.LatencyEWMA <= 0 ||
			s.Weight != 100 {
			t.Fatalf("the instance's stats after a report: %+v", s)
		}
		return
	}
	t.Fatalf("no stats of %s in %+v", inst.Host, stats)
}

func TestRecordReadsHeaderNamesInAnyCase(t *testing.T) {
	c := mustNew(t, "static://10.0.0.1:80,10.0.0.2:80")
	call, _ := c.Call(nil)
	defer call.Close()
	inst, _ := call.Next()
	header := http.Header{"endpoint-LOAD-metrics": { // a map built by hand: not canonical
		"TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"}}
	if _, err := call.Record(OutcomeResponse, 200, header); err != nil {
		t.Fatal(err)
	}
	call.Finish(BodyDone)
	stats, _ := c.InstanceStats()
	for _, s := range stats {
		if s.ID == inst.ID && (s.ReportedWaiting != 3 || s.ReportedKVPermille != 400 || s.LastReport.IsZero()) {
			t.Fatalf("the report was not read: %+v", s)
		}
	}
}

func TestA503WithRetryAfterBacksTheInstanceOffWithoutAFailure(t *testing.T) {
	c := mustNew(t, "static://10.0.0.1:80,10.0.0.2:80,10.0.0.3:80")
	call, _ := c.Call(nil)
	first, _ := call.Next()
	recorded := time.Now()
	if _, err := call.Record(OutcomeResponse, 503, http.Header{"Retry-After": {"30"}}); err != nil {
		t.Fatal(err)
	}
	call.Close()
	stats, _ := c.InstanceStats()
	for _, s := range stats {
		// Without the header this 503 would be a failure, ejected for 10 s (ejection_base_ms).
		if s.ID == first.ID && (s.Failures != 0 || s.EjectedUntil.Before(recorded.Add(20*time.Second))) {
			t.Fatalf("after a 503 with Retry-After: 30: %+v", s)
		}
	}
	for range 30 {
		if inst, _ := c.Select(); inst.ID == first.ID {
			t.Fatalf("%s backs off, and was picked again", first.Host)
		}
	}
}

func TestCallMisuseIsAnInvalidArgument(t *testing.T) {
	c := mustNew(t, "static://10.0.0.1:80,10.0.0.2:80")
	call, err := c.Call(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	if _, err := call.Record(OutcomeResponse, 200, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Record before Next: %v", err)
	}
	if _, err := call.Next(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		o      Outcome
		status int
	}{{OutcomeResponse, 99}, {OutcomeResponse, 600}, {OutcomeResponse, 0}, {Outcome(7), 200}, {Outcome(-1), 0}} {
		if _, err := call.Record(bad.o, bad.status, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Record(%v, %d): %v", bad.o, bad.status, err)
		}
	}
	if retry, err := call.Record(OutcomeReset, 12345, nil); err != nil || !retry { // status ignored
		t.Fatalf("Record(reset): %v %v", retry, err)
	}
	if _, err := call.Record(OutcomeReset, 0, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a second Record of one attempt: %v", err)
	}
	if err := call.Finish(Body(9)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Finish(Body(9)): %v", err)
	}
	if err := call.Finish(BodyDone); err != nil { // nothing to finish: harmless
		t.Fatal(err)
	}
}

func TestEveryMethodOfANilZeroOrClosedCallIsErrClosed(t *testing.T) {
	c := mustNew(t, "static://10.0.0.1:80")
	closed, _ := c.Call(nil)
	closed.Close()
	for name, call := range map[string]*Call{"nil": nil, "zero": {}, "closed": closed} {
		if _, err := call.Next(); !errors.Is(err, ErrClosed) {
			t.Errorf("Next of a %s Call: %v", name, err)
		}
		if _, err := call.Record(OutcomeResponse, 200, nil); !errors.Is(err, ErrClosed) {
			t.Errorf("Record of a %s Call: %v", name, err)
		}
		if err := call.Finish(BodyDone); !errors.Is(err, ErrClosed) {
			t.Errorf("Finish of a %s Call: %v", name, err)
		}
		if err := call.Close(); err != nil {
			t.Errorf("Close of a %s Call: %v", name, err)
		}
	}
}

func TestACallKeepsItsClientAlive(t *testing.T) {
	call := func() *Call {
		c, err := New("static://10.0.0.1:80,10.0.0.2:80")
		if err != nil {
			t.Fatal(err)
		}
		call, err := c.Call(nil)
		if err != nil {
			t.Fatal(err)
		}
		return call // the only reference to c
	}()
	for range 3 {
		runtime.GC() // would run the client's cleanup (eas_client_free) if the call did not hold it
	}
	inst, err := call.Next()
	if err != nil || inst.Host == "" {
		t.Fatalf("Next after the client became unreachable: %+v %v", inst, err)
	}
	if _, err := call.Record(OutcomeResponse, 200, nil); err != nil {
		t.Fatal(err)
	}
	call.Close()
	call.client.Close()
}

func TestServiceAndTargetKeepSecretsOut(t *testing.T) {
	c := mustNew(t, "nacos://127.0.0.1:1/my_service?username=u&password=s3cret-pw&request_timeout_ms=50")
	if c.Service() != "my_service" {
		t.Fatalf("Service() = %q", c.Service())
	}
	if got := c.Target(); got != "nacos://127.0.0.1:1/my_service" {
		t.Fatalf("Target() = %q", got)
	}
	s := mustNew(t, "static://10.0.0.1:80,10.0.0.2:80")
	if s.Service() != "" || s.Target() != "static://10.0.0.1:80,10.0.0.2:80" {
		t.Fatalf("a static target: Service() %q, Target() %q", s.Service(), s.Target())
	}
	s.Close()
	if s.Target() == "" {
		t.Fatal("Target() is empty after Close")
	}
	if (*Client)(nil).Target() != "" {
		t.Fatal("the Target of a nil Client")
	}
}

func TestDeliveryIsPollForEverySourceButAPushingNacosAndErrClosedAfterClose(t *testing.T) {
	c := mustNew(t, "static://10.0.0.1:80,10.0.0.2:80")
	d, err := c.Delivery()
	if err != nil || d != DeliveryPoll || d.String() != "poll" {
		t.Fatalf("Delivery() = %v, %v", d, err)
	}
	// A Nacos client whose server never answers: polling, since no stream came up.
	n := mustNew(t, "nacos://127.0.0.1:1/svc?request_timeout_ms=50")
	if d, err := n.Delivery(); err != nil || d != DeliveryPoll {
		t.Fatalf("nacos Delivery() = %v, %v", d, err)
	}
	c.Close()
	if _, err := c.Delivery(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := (*Client)(nil).Delivery(); !errors.Is(err, ErrClosed) {
		t.Fatalf("a nil Client: %v", err)
	}
	if DeliveryPush.String() != "push" {
		t.Fatal(DeliveryPush.String())
	}
}
