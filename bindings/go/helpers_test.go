package easdirect

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// discovery is an EAS discovery API served by the test itself: it lists, for one service,
// whatever items the test sets, or fails with a status.
type discovery struct {
	srv     *httptest.Server
	service string
	mu      sync.Mutex
	items   []map[string]any
	status  int // when not 0, every discovery request answers this
	fetches atomic.Int64
}

func newDiscovery(t *testing.T, service string) *discovery {
	t.Helper()
	d := &discovery{service: service}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.fetches.Add(1)
		if r.URL.Path != "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/"+d.service {
			http.NotFound(w, r)
			return
		}
		d.mu.Lock()
		status, items := d.status, d.items
		d.mu.Unlock()
		if status != 0 {
			http.Error(w, "fault", status)
			return
		}
		if items == nil {
			items = []map[string]any{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"correlative": []string{d.service},
			"endpoints":   map[string]any{"items": items},
		})
	}))
	t.Cleanup(d.srv.Close)
	return d
}

// target is the eas:// target of the service, refreshing every 20 ms.
func (d *discovery) target() string {
	return "eas://" + d.srv.Listener.Addr().String() + "/" + d.service + "?refresh_interval_ms=20"
}

// set lists hosts ("ip:port"), each of weight 100.
func (d *discovery) set(hosts ...string) {
	items := make([]map[string]any, 0, len(hosts))
	for _, h := range hosts {
		host, port, _ := net.SplitHostPort(h)
		p, _ := strconv.Atoi(port)
		items = append(items, map[string]any{"app": d.service, "ip": host, "port": p, "weight": 100})
	}
	d.mu.Lock()
	d.items, d.status = items, 0
	d.mu.Unlock()
}

func (d *discovery) fail(status int) {
	d.mu.Lock()
	d.status = status
	d.mu.Unlock()
}

// instanceServer is a real local HTTP instance whose answer the test can change: a status, or
// a dead listener.
type instanceServer struct {
	srv    *httptest.Server
	status atomic.Int32 // 0 means 200
	hang   atomic.Bool
	hits   atomic.Int64
	mu     sync.Mutex
	bodies []string
}

func newInstance(t *testing.T) *instanceServer {
	t.Helper()
	s := &instanceServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		var body strings.Builder
		if r.Body != nil {
			buf := make([]byte, 4096)
			for {
				n, err := r.Body.Read(buf)
				body.Write(buf[:n])
				if err != nil {
					break
				}
			}
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, body.String())
		s.mu.Unlock()
		if s.hang.Load() {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		status := int(s.status.Load())
		if status == 0 {
			status = 200
		}
		w.Header().Set("X-Instance", s.host())
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s %s?%s %s", s.host(), r.URL.Path, r.URL.RawQuery, body.String())
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *instanceServer) host() string { return s.srv.Listener.Addr().String() }

// kill closes the listener and every connection: later requests meet a refused connection.
func (s *instanceServer) kill() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// hostsOf lists the hosts of servers.
func hostsOf(servers ...*instanceServer) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.host()
	}
	return out
}

func staticTarget(hosts ...string) string { return "static://" + strings.Join(hosts, ",") }

// mustNew creates a client that is closed at the end of the test.
func mustNew(t *testing.T, target string, opts ...Option) *Client {
	t.Helper()
	c, err := New(target, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", target, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond every 10 ms for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
