package easdirect

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// The helper's cost beside plain net/http: GET requests to one zero-delay loopback backend
// (the emulator's echo backend), each read to its end and closed, over a kept-alive
// connection, plain (http://127.0.0.1:P/x) and through Client.Transport (http://svc/x: one
// call, the rewrite, the load-report ask, the wrapped body).

func benchBackend(b *testing.B) (plain, helper *http.Client, direct string) {
	e := startEmulator(b, "svc", 1)
	bs := e.backends(b)
	if len(bs) != 1 {
		b.Fatalf("backends: %+v", bs)
	}
	c, err := New(e.target("svc"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	for {
		if list, _ := c.Instances(); len(list) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := func() *http.Transport {
		t := http.DefaultTransport.(*http.Transport).Clone()
		b.Cleanup(t.CloseIdleConnections)
		return t
	}
	plain = &http.Client{Transport: base()}
	helper = &http.Client{Transport: c.Transport(base())}
	return plain, helper, "http://" + bs[0].Host() + "/x"
}

func (b emulatedBackend) Host() string { return fmt.Sprintf("127.0.0.1:%d", b.Port) }

func get(b *testing.B, hc *http.Client, url string) {
	resp, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkHTTPPlain is one request through net/http alone.
func BenchmarkHTTPPlain(b *testing.B) {
	plain, _, direct := benchBackend(b)
	get(b, plain, direct)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		get(b, plain, direct)
	}
}

// BenchmarkHTTPTransport is the same request through Client.Transport.
func BenchmarkHTTPTransport(b *testing.B) {
	_, helper, _ := benchBackend(b)
	get(b, helper, "http://svc/x")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		get(b, helper, "http://svc/x")
	}
}

// BenchmarkHTTPOverhead alternates a plain request and a helper request, timing each, and
// reports the median of each kind and their difference (the helper's overhead per request):
// both measured in the same moments of the same run, so a busy machine shifts both alike.
func BenchmarkHTTPOverhead(b *testing.B) {
	plain, helper, direct := benchBackend(b)
	get(b, plain, direct)
	get(b, helper, "http://svc/x")
	tp := make([]time.Duration, 0, b.N)
	th := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		get(b, plain, direct)
		t1 := time.Now()
		get(b, helper, "http://svc/x")
		th = append(th, time.Since(t1))
		tp = append(tp, t1.Sub(t0))
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds())
	}
	mp, mh := median(tp), median(th)
	b.ReportMetric(mp, "plain-ns/req")
	b.ReportMetric(mh, "helper-ns/req")
	b.ReportMetric(mh-mp, "overhead-ns/req")
}

// cannedTransport answers every request at once with a 200 and an empty body: no network.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// BenchmarkTransportWithoutNetwork is the helper's own work per request (the call's cycle,
// the rewrite, the attempt's context and timer, the wrapped body) over a base transport that
// answers at once, beside BenchmarkCallCycle and BenchmarkSelect.
func BenchmarkTransportWithoutNetwork(b *testing.B) {
	c := benchClient(b, 100)
	tr := c.Transport(cannedTransport{}, WithHostAliases("svc"))
	req, _ := http.NewRequest("GET", "http://svc/x", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
