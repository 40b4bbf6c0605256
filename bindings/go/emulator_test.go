package easdirect

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests run the repository's EAS emulator (`easdirect emulate`, real local backends
// behind an emulated discovery API) as a subprocess and drive it over its control API.
// EASDIRECT_EMULATOR names the binary (default: ../../target/release/easdirect). Without it they
// are skipped, unless EASDIRECT_REQUIRE_EMULATOR=1 (as run-tests.sh sets).

type emulator struct {
	addr string // 127.0.0.1:PORT
}

func startEmulator(t testing.TB, service string, backends int) *emulator {
	t.Helper()
	bin := os.Getenv("EASDIRECT_EMULATOR")
	if bin == "" {
		bin, _ = filepath.Abs("../../target/release/easdirect")
	}
	missing := func(why string) {
		if os.Getenv("EASDIRECT_REQUIRE_EMULATOR") == "1" {
			t.Fatalf("the emulator is required: %s", why)
		}
		t.Skipf("no emulator (%s); set EASDIRECT_EMULATOR", why)
	}
	if _, err := os.Stat(bin); err != nil {
		missing(err.Error())
	}
	cmd := exec.Command(bin, "emulate", "--listen", "127.0.0.1:0", "--service", service,
		"--backends", fmt.Sprint(backends), "--duration", "300")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		missing(err.Error())
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() { // keep draining, so the emulator never blocks on a full pipe
		}
	}()
	select {
	case line, ok := <-lines:
		addr, found := strings.CutPrefix(line, "listening ")
		if !ok || !found {
			missing(fmt.Sprintf("%s emulate printed %q", bin, line))
		}
		return &emulator{addr: addr}
	case <-time.After(10 * time.Second):
		missing("no `listening` line within 10 s")
	}
	return nil
}

func (e *emulator) target(service string) string {
	return "eas://" + e.addr + "/" + service + "?refresh_interval_ms=50"
}

func (e *emulator) do(t testing.TB, method, path string, body any) []byte {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, "http://"+e.addr+"/_emulator"+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out.String())
	}
	return out.Bytes()
}

type emulatedBackend struct {
	Port int    `json:"port"`
	Mode string `json:"mode"`
	Hits int64  `json:"hits"`
}

func (e *emulator) backends(t testing.TB) []emulatedBackend {
	t.Helper()
	var list []emulatedBackend
	if err := json.Unmarshal(e.do(t, "GET", "/backends", nil), &list); err != nil {
		t.Fatal(err)
	}
	return list
}

func (e *emulator) hits(t *testing.T, port int) int64 {
	for _, b := range e.backends(t) {
		if b.Port == port {
			return b.Hits
		}
	}
	t.Fatalf("no backend on port %d", port)
	return 0
}

func (e *emulator) setMode(t *testing.T, port int, mode string, status int) {
	e.do(t, "PUT", fmt.Sprintf("/backends/%d", port), map[string]any{"mode": mode, "status": status})
}

func emulatedService(t *testing.T, opts ...Option) (*emulator, *Client, []emulatedBackend) {
	e := startEmulator(t, "svc", 3)
	c := mustNew(t, e.target("svc"), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	bs := e.backends(t)
	if len(bs) != 3 {
		t.Fatalf("backends: %+v", bs)
	}
	return e, c, bs
}

// The failure scenario every binding's helper runs (the Python tests have it too): one
// instance answers 503, then dies, then discovery answers an empty list (the client keeps its
// last list). Not one request may fail.
func TestEmulatedNoRequestFailsWhileABackend503sThenDiesThenDiscoveryAnswersEmpty(t *testing.T) {
	e, c, bs := emulatedService(t, WithEjectionTime(100*time.Millisecond, 200*time.Millisecond))
	hc := httpClient(c)
	bad := bs[2].Port
	failed := 0
	send := func(phase string, n int) {
		for i := range n {
			resp, body := post(t, hc, `{"x":1}`)
			if resp.StatusCode != 200 || !strings.Contains(body, `"body_len":7`) {
				failed++
				t.Errorf("%s, request %d: %d %s", phase, i, resp.StatusCode, body)
			}
			if i%10 == 0 {
				time.Sleep(60 * time.Millisecond) // let ejections expire, so the bad one is tried again
			}
		}
	}
	e.setMode(t, bad, "status", 503)
	send("503", 60)
	if e.hits(t, bad) == 0 {
		t.Fatal("the 503 backend was never tried: the test proves nothing")
	}
	e.setMode(t, bad, "dead", 0)
	send("dead", 60)
	before, _ := c.Stats()
	e.do(t, "PUT", "/fault", map[string]any{"fault": "empty_list"})
	eventually(t, "two empty discovery answers", func() bool {
		st, _ := c.Stats()
		return st.RefreshFailed >= before.RefreshFailed+2
	})
	send("empty list", 60)
	if failed != 0 {
		t.Fatalf("%d of 180 requests failed", failed)
	}
	if n := inFlight(t, c); n != 0 {
		t.Fatalf("%d attempts still in flight", n)
	}
}

func TestEmulatedNoRequestReachesAnEjectedBackend(t *testing.T) {
	const ejection = 2 * time.Second
	e, c, bs := emulatedService(t, WithEjectionTime(ejection, 4*ejection))
	hc := httpClient(c)
	bad := bs[0].Port
	e.setMode(t, bad, "status", 503)
	for e.hits(t, bad) == 0 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	ejectedAt := time.Now()
	hits := e.hits(t, bad)
	n := 0
	for time.Since(ejectedAt) < ejection/2 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		n++
	}
	if got := e.hits(t, bad); got != hits {
		t.Fatalf("the ejected backend received %d of %d requests during its ejection", got-hits, n)
	}
}

func TestEmulatedA4xxIsReturnedNotRetried(t *testing.T) {
	e, c, bs := emulatedService(t)
	for _, b := range bs {
		e.setMode(t, b.Port, "status", 404)
	}
	total := func() (n int64) {
		for _, b := range e.backends(t) {
			n += b.Hits
		}
		return n
	}
	before := total()
	hc := httpClient(c)
	for range 10 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 404 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if got := total() - before; got != 10 {
		t.Fatalf("10 requests reached the backends %d times", got)
	}
}
