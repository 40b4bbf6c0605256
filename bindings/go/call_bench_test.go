package easdirect

import (
	"net/http"
	"testing"
)

// BenchmarkCallCycle is one whole unkeyed call of one attempt, as a request through the call
// API costs it beside its I/O: Call (eas_call_begin), Next, Record of a 200 carrying vLLM's
// load report, Finish, Close (eas_call_free); on a static:// list of 100 instances, next to
// BenchmarkSelect's plain pick.
func BenchmarkCallCycle(b *testing.B) {
	c := benchClient(b, 100)
	header := http.Header{"Endpoint-Load-Metrics": {
		"TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		call, err := c.Call(nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := call.Next(); err != nil {
			b.Fatal(err)
		}
		if _, err := call.Record(OutcomeResponse, 200, header); err != nil {
			b.Fatal(err)
		}
		if err := call.Finish(BodyDone); err != nil {
			b.Fatal(err)
		}
		call.Close()
	}
}
