package easdirect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The shared case table of every binding's HTTP helper (tests/helpers/cases.json, schema in
// tests/helpers/README.md), run against the emulator's backends through Client.Transport.

const runnerID = "go"

type caseTable struct {
	Schema  int          `json:"schema"`
	Service string       `json:"service"`
	Forms   []targetForm `json:"forms"`
	Cases   []helperCase `json:"cases"`
}

type targetForm struct {
	Target  string   `json:"target"`
	Service string   `json:"service"`
	Rewrite []string `json:"rewrite"`
	Aliases []string `json:"aliases"`
}

type helperCase struct {
	Name          string            `json:"name"`
	Why           string            `json:"why"`
	Client        string            `json:"client"`
	ClientOptions map[string]string `json:"client_options"`
	Backends      []map[string]any  `json:"backends"`
	Helper        struct {
		Scheme                string   `json:"scheme"`
		Token                 string   `json:"token"`
		LoadReports           *bool    `json:"load_reports"`
		AttemptTimeoutMs      *int     `json:"attempt_timeout_ms"`
		IdempotentRetriesOnly bool     `json:"idempotent_retries_only"`
		AffinityHeader        string   `json:"affinity_header"`
		Aliases               []string `json:"aliases"`
	} `json:"helper"`
	Request struct {
		Method  string            `json:"method"`
		Host    string            `json:"host"`
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
		Body    *struct {
			Kind string `json:"kind"`
			Size int    `json:"size"`
		} `json:"body"`
		Stream bool `json:"stream"`
	} `json:"request"`
	Repeat int `json:"repeat"`
	During []struct {
		AfterMs int              `json:"after_ms"`
		Do      string           `json:"do"`
		Modes   []map[string]any `json:"modes"`
	} `json:"during"`
	Skip   map[string]string `json:"skip"`
	Expect struct {
		Status   *int            `json:"status"`
		Error    string          `json:"error"`
		Hits     json.RawMessage `json:"hits"`
		Received *struct {
			Method        string            `json:"method"`
			Path          string            `json:"path"`
			BodyLen       *int              `json:"body_len"`
			Headers       map[string]string `json:"headers"`
			AbsentHeaders []string          `json:"absent_headers"`
		} `json:"received"`
		Passthrough         bool      `json:"passthrough"`
		FromBackend         *int      `json:"from_backend"`
		DistinctBackends    *int      `json:"distinct_backends"`
		DistinctBackendsMin *int      `json:"distinct_backends_min"`
		BackingOff          *int      `json:"backing_off"`
		BackoffS            []float64 `json:"backoff_s"`
		LoadReportSeen      *bool     `json:"load_report_seen"`
		InFlightDuringBody  *int      `json:"in_flight_during_body"`
		BodyContains        string    `json:"body_contains"`
	} `json:"expect"`
}

func loadCaseTable(t *testing.T) caseTable {
	t.Helper()
	path := filepath.Join("..", "..", "tests", "helpers", "cases.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the case table: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields() // a field this runner does not know must not pass unchecked
	var table caseTable
	if err := dec.Decode(&table); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if table.Schema != 1 || len(table.Cases) == 0 || len(table.Forms) == 0 {
		t.Fatalf("%s: schema %d with %d cases and %d forms", path, table.Schema, len(table.Cases), len(table.Forms))
	}
	return table
}

// countingTransport is the helper's base: it counts what reaches it, per host.
type countingTransport struct {
	base  *http.Transport
	mu    sync.Mutex
	hosts map[string]int
}

func newCountingTransport() *countingTransport {
	return &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone(), hosts: map[string]int{}}
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.hosts[req.URL.Host]++
	c.mu.Unlock()
	return c.base.RoundTrip(req)
}

func (c *countingTransport) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.hosts {
		n += v
	}
	return n
}

func TestHelperTableTargetForms(t *testing.T) {
	table := loadCaseTable(t)
	for _, f := range table.Forms {
		t.Run(f.Target, func(t *testing.T) {
			c := mustNew(t, f.Target)
			if got := c.Service(); got != f.Service {
				t.Fatalf("Service() = %q, want %q", got, f.Service)
			}
			base := newCountingTransport()
			hc := &http.Client{Transport: c.Transport(base, WithHostAliases(f.Aliases...))}
			// Rewritten, the request fails: with no instance (eas, nacos, dns: nothing listed), or
			// on the target's own instance (static://127.0.0.1:1 refuses), never at the named host.
			for _, host := range f.Rewrite {
				_, err := hc.Get("http://" + host + "/v1/x")
				var ae *AttemptError
				if !errors.Is(err, ErrNoInstance) && !(errors.As(err, &ae) && strings.Contains(f.Target, ae.Instance)) {
					t.Errorf("GET http://%s/v1/x: %v, want the error of a rewritten request", host, err)
				}
				if n := base.hosts[host]; n != 0 {
					t.Errorf("%d requests went to %s itself", n, host)
				}
			}
		})
	}
}

// emulatedBackendState is a backend as GET /_emulator/backends lists it.
type emulatedBackendState struct {
	Port     int   `json:"port"`
	Hits     int64 `json:"hits"`
	Requests []struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"`
		BodyLen *int              `json:"body_len"`
		Headers map[string]string `json:"headers"`
	} `json:"requests"`
}

func TestHelperTableCases(t *testing.T) {
	table := loadCaseTable(t)
	seen := map[string]bool{}
	for _, hc := range table.Cases {
		if seen[hc.Name] {
			t.Fatalf("case %q appears twice", hc.Name)
		}
		seen[hc.Name] = true
		t.Run(hc.Name, func(t *testing.T) {
			if why, ok := hc.Skip[runnerID]; ok {
				t.Skip(why)
			}
			// An emulator of its own: the emulator may give a new backend the port of one a
			// case stopped ("dead"), and then addresses by port would be ambiguous.
			e := startEmulator(t, table.Service, 1)
			var pass []struct {
				Port int `json:"port"`
			}
			if err := json.Unmarshal(e.do(t, "POST", "/backends", map[string]any{"service": "passthrough", "count": 1}), &pass); err != nil || len(pass) != 1 {
				t.Fatalf("the passthrough backend: %v %v", pass, err)
			}
			runHelperCase(t, e, table.Service, pass[0].Port, hc)
		})
	}
}

func runHelperCase(t *testing.T, e *emulator, service string, passPort int, hc helperCase) {
	// The case's backends: the service's list, replaced.
	ports := make([]int, len(hc.Backends))
	for i, spec := range hc.Backends {
		req := map[string]any{"service": service, "count": 1, "replace": i == 0}
		if llm, ok := spec["llm"]; ok {
			req["kind"], req["llm"] = "llm", llm
		}
		var out []struct {
			Port int `json:"port"`
		}
		if err := json.Unmarshal(e.do(t, "POST", "/backends", req), &out); err != nil || len(out) != 1 {
			t.Fatalf("starting backend %d: %v %v", i, out, err)
		}
		ports[i] = out[0].Port
	}
	setModes := func(modes []map[string]any) {
		for i, m := range modes {
			mode := map[string]any{}
			for k, v := range m {
				if k != "llm" {
					mode[k] = v
				}
			}
			e.do(t, "PUT", fmt.Sprintf("/backends/%d", ports[i]), mode)
		}
	}
	setModes(hc.Backends)
	hosts := make([]string, len(ports))
	for i, p := range ports {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}

	// The client, ready with exactly these backends.
	target := e.target(service)
	if hc.Client == "static" {
		target = staticTarget(hosts...)
	} else if hc.Client != "" && hc.Client != "eas" {
		t.Fatalf("unknown client %q", hc.Client)
	}
	var opts []Option
	for k, v := range hc.ClientOptions {
		opts = append(opts, WithOption(k, v))
	}
	c, err := New(target, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", target, err)
	}
	defer c.Close()
	eventually(t, "the client's list to hold the case's backends", func() bool {
		list, err := c.Instances()
		if err != nil || len(list) != len(hosts) {
			return false
		}
		got := map[string]bool{}
		for _, in := range list {
			got[in.Host] = true
		}
		for _, h := range hosts {
			if !got[h] {
				return false
			}
		}
		return true
	})

	// The helper.
	var topts []TransportOption
	h := hc.Helper
	if h.Scheme != "" {
		topts = append(topts, WithScheme(h.Scheme))
	}
	if h.Token != "" {
		topts = append(topts, WithToken(h.Token))
	}
	if h.LoadReports != nil {
		topts = append(topts, WithLoadReports(*h.LoadReports))
	}
	if h.AttemptTimeoutMs != nil {
		topts = append(topts, WithAttemptTimeout(time.Duration(*h.AttemptTimeoutMs)*time.Millisecond))
	}
	if h.IdempotentRetriesOnly {
		topts = append(topts, WithIdempotentRetriesOnly())
	}
	if h.AffinityHeader != "" {
		topts = append(topts, WithAffinityHeader(h.AffinityHeader))
	}
	if len(h.Aliases) > 0 {
		topts = append(topts, WithHostAliases(h.Aliases...))
	}
	base := http.DefaultTransport.(*http.Transport).Clone() // an *http.Transport, as most callers have
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: c.Transport(base, topts...)}

	passHost := fmt.Sprintf("127.0.0.1:%d", passPort)
	host := strings.NewReplacer("{service}", service, "{passthrough}", passHost,
		"{passthrough_named}", fmt.Sprintf("localhost:%d", passPort)).Replace(hc.Request.Host)
	url := "http://" + host + hc.Request.Path
	x := hc.Expect

	repeat := max(hc.Repeat, 1)
	var closed atomic.Bool
	var status int
	var respBody []byte
	var lastErr error
	for i := range repeat {
		ctx, cancel := context.WithCancel(context.Background())
		req := newCaseRequest(t, hc, ctx, url)
		var during sync.WaitGroup
		if i == 0 {
			for _, d := range hc.During {
				during.Add(1)
				time.AfterFunc(time.Duration(d.AfterMs)*time.Millisecond, func() {
					defer during.Done()
					switch d.Do {
					case "close_client":
						closed.Store(true)
						c.Close()
					case "cancel":
						cancel()
					case "set_backends":
						setModes(d.Modes)
					default:
						t.Errorf("unknown action %q", d.Do)
					}
				})
			}
		}
		resp, err := client.Do(req)
		lastErr, status, respBody = err, 0, nil
		if err == nil {
			status = resp.StatusCode
			if x.InFlightDuringBody != nil {
				if got := inFlight(t, c); int(got) != *x.InFlightDuringBody {
					t.Errorf("in flight after the headers, before the body: %d, want %d", got, *x.InFlightDuringBody)
				}
			}
			respBody, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Errorf("reading the body: %v", err)
			}
		}
		during.Wait()
		cancel()
		if !closed.Load() {
			if got := inFlight(t, c); got != 0 {
				t.Errorf("request %d: %d attempts still in flight once it was over", i+1, got)
			}
		}
	}

	// The answer.
	if x.Status != nil {
		if lastErr != nil {
			t.Fatalf("%s %s: %v, want status %d", hc.Request.Method, url, lastErr, *x.Status)
		}
		if status != *x.Status {
			t.Errorf("status %d, want %d (%s)", status, *x.Status, respBody)
		}
	}
	if x.Error != "" {
		checkCaseError(t, x.Error, lastErr, status)
	}
	if x.BodyContains != "" && !bytes.Contains(respBody, []byte(x.BodyContains)) {
		t.Errorf("the body has no %q: %.300s", x.BodyContains, respBody)
	}
	answeredBy := func() string {
		var v struct {
			Backend string `json:"backend"`
		}
		json.Unmarshal(respBody, &v)
		return v.Backend
	}
	if x.Passthrough && answeredBy() != passHost {
		t.Errorf("answered by %q, want the passthrough backend %s", answeredBy(), passHost)
	}
	if x.FromBackend != nil && answeredBy() != hosts[*x.FromBackend] {
		t.Errorf("answered by %q, want backend %d (%s)", answeredBy(), *x.FromBackend, hosts[*x.FromBackend])
	}

	// What the backends saw.
	var states []emulatedBackendState
	if err := json.Unmarshal(e.do(t, "GET", "/backends", nil), &states); err != nil {
		t.Fatal(err)
	}
	byPort := map[int]emulatedBackendState{}
	for _, s := range states {
		byPort[s.Port] = s
	}
	var hits int64
	distinct := 0
	for _, p := range ports {
		hits += byPort[p].Hits
		if byPort[p].Hits > 0 {
			distinct++
		}
	}
	if len(x.Hits) > 0 {
		lo, hi := hitRange(t, x.Hits)
		if hits < lo || hits > hi {
			t.Errorf("the service's backends received %d requests, want %s", hits, x.Hits)
		}
	}
	if x.DistinctBackends != nil && distinct != *x.DistinctBackends {
		t.Errorf("%d backends received requests, want %d", distinct, *x.DistinctBackends)
	}
	if x.DistinctBackendsMin != nil && distinct < *x.DistinctBackendsMin {
		t.Errorf("%d backends received requests, want at least %d", distinct, *x.DistinctBackendsMin)
	}
	if r := x.Received; r != nil {
		for i, p := range ports {
			for _, got := range byPort[p].Requests {
				where := fmt.Sprintf("backend %d received %s %s", i, got.Method, got.Path)
				if r.Method != "" && got.Method != r.Method {
					t.Errorf("%s: method, want %s", where, r.Method)
				}
				if r.Path != "" && got.Path != r.Path {
					t.Errorf("%s: path, want %s", where, r.Path)
				}
				if r.BodyLen != nil && (got.BodyLen == nil || *got.BodyLen != *r.BodyLen) {
					t.Errorf("%s: body of %v bytes, want %d", where, lenOf(got.BodyLen), *r.BodyLen)
				}
				for k, v := range r.Headers {
					if got.Headers[k] != v {
						t.Errorf("%s: header %s %q, want %q", where, k, got.Headers[k], v)
					}
				}
				for _, k := range r.AbsentHeaders {
					if _, ok := got.Headers[k]; ok {
						t.Errorf("%s: has header %s, want none", where, k)
					}
				}
			}
		}
	}

	// What the client's figures say.
	if x.BackingOff != nil || x.BackoffS != nil || x.LoadReportSeen != nil {
		stats, err := c.InstanceStats()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		off, reported := 0, false
		for _, s := range stats {
			if s.EjectedUntil.After(now) {
				off++
				if b := x.BackoffS; len(b) == 2 {
					if secs := s.EjectedUntil.Sub(now).Seconds(); secs < b[0] || secs > b[1] {
						t.Errorf("instance %d backs off for %.1f s, want %v", s.ID, secs, b)
					}
				}
			}
			reported = reported || !s.LastReport.IsZero()
		}
		if x.BackingOff != nil && off != *x.BackingOff {
			t.Errorf("%d instances backing off, want %d", off, *x.BackingOff)
		}
		if x.LoadReportSeen != nil && reported != *x.LoadReportSeen {
			t.Errorf("a load report seen: %t, want %t", reported, *x.LoadReportSeen)
		}
	}
}

// newCaseRequest builds the case's request, with a fresh body of the case's kind.
func newCaseRequest(t *testing.T, hc helperCase, ctx context.Context, url string) *http.Request {
	t.Helper()
	var body io.Reader
	if b := hc.Request.Body; b != nil {
		data := bytes.Repeat([]byte("x"), b.Size)
		switch b.Kind {
		case "bytes":
			body = bytes.NewReader(data) // http.NewRequest sets GetBody
		case "file":
			path := filepath.Join(t.TempDir(), "body")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			body = f
		case "stream":
			body = struct{ io.Reader }{bytes.NewReader(data)} // reads once: no GetBody
		default:
			t.Fatalf("unknown body kind %q", b.Kind)
		}
	}
	req, err := http.NewRequestWithContext(ctx, hc.Request.Method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hc.Request.Headers {
		req.Header.Set(k, v)
	}
	return req
}

func checkCaseError(t *testing.T, want string, err error, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("status %d, want an error (%s)", status, want)
	}
	var ne net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	cancelled := errors.Is(err, context.Canceled)
	noInstance := errors.Is(err, ErrNoInstance)
	ok := false
	switch want {
	case "no_instance":
		ok = noInstance
	case "timeout":
		ok = timeout && !cancelled
	case "cancelled":
		ok = cancelled
	case "transport": // nothing sent, or sent and reset: a connection error
		var ae *AttemptError
		ok = errors.As(err, &ae) && (ae.Outcome == OutcomeConnectFailed || ae.Outcome == OutcomeReset)
	case "any":
		ok = true
	default:
		t.Fatalf("unknown error kind %q", want)
	}
	if !ok {
		t.Errorf("error %v (timeout %t, cancelled %t, no instance %t), want a %s error",
			err, timeout, cancelled, noInstance, want)
	}
}

func hitRange(t *testing.T, raw json.RawMessage) (int64, int64) {
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return n, n
	}
	var r [2]int64
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("hits %s: %v", raw, err)
	}
	return r[0], r[1]
}

func lenOf(p *int) any {
	if p == nil {
		return "unread"
	}
	return *p
}
