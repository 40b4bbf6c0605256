package easdirectprom

import (
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

const target = "static://127.0.0.1:7001,127.0.0.1:7002*300,127.0.0.1:7003"

// busyClient is a static:// client (no refreshes: its figures only change by what the test
// does) on which calls went to every instance, one answered 503 with a load report, and one
// instance was ejected for a minute.
func busyClient(t *testing.T) *easdirect.Client {
	t.Helper()
	c, err := easdirect.New(target, easdirect.WithEjectionTime(time.Minute, 2*time.Minute),
		easdirect.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	report := http.Header{"Endpoint-Load-Metrics": {
		"TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0, named_metrics.num_requests_running=2.0"}}
	for i := range 6 {
		call, err := c.Call(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := call.Next(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // a latency sample that is not 0
		status := 200
		if i == 5 {
			status = 503
		}
		if _, err := call.Record(easdirect.OutcomeResponse, status, report); err != nil {
			t.Fatal(err)
		}
		call.Finish(easdirect.BodyDone)
		call.Close()
	}
	list, err := c.Instances()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ReportFailure(list[0].ID); err != nil {
		t.Fatal(err)
	}
	return c
}

// sample is the value of name's sample whose labels are labels (name=value pairs); it fails
// the test when there is not exactly one.
func sample(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	family := families[name]
	if family == nil {
		t.Fatalf("no family %s", name)
	}
	var found []float64
	for _, m := range family.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := len(got) == len(labels)/2
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && got[labels[i]] == labels[i+1]
		}
		if match {
			found = append(found, value(m))
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples", name, labels, len(found))
	}
	return found[0]
}

func unixSeconds(tm time.Time) float64 {
	if tm.IsZero() {
		return 0
	}
	return float64(tm.UnixMilli()) / 1000
}

func TestTheMetricsTextParsesAndMatchesTheStats(t *testing.T) {
	c := busyClient(t)
	stats, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.Instances()
	if err != nil {
		t.Fatal(err)
	}
	perInstance, err := c.InstanceStats()
	if err != nil {
		t.Fatal(err)
	}
	text, err := c.MetricsText()
	if err != nil {
		t.Fatal(err)
	}
	families, err := Parse(text)
	if err != nil {
		t.Fatalf("expfmt: %v\n%s", err, text)
	}
	if stats.Instances != 3 || stats.Ejected != 1 || len(perInstance) != 3 {
		t.Fatalf("the test set-up did not take: %+v, %d instance stats", stats, len(perInstance))
	}
	tg := []string{"target", c.Target()}
	checks := []struct {
		name string
		want float64
		got  float64
	}{
		{"easdirect_list_generation", float64(stats.Generation), sample(t, families, "easdirect_list_generation", tg...)},
		{"easdirect_instances", float64(stats.Instances), sample(t, families, "easdirect_instances", tg...)},
		{"easdirect_instances_ejected", float64(stats.Ejected), sample(t, families, "easdirect_instances_ejected", tg...)},
		{"fetches ok", float64(stats.RefreshOK),
			sample(t, families, "easdirect_discovery_fetches_total", append(tg, "result", "ok")...)},
		{"fetches failed", float64(stats.RefreshFailed),
			sample(t, families, "easdirect_discovery_fetches_total", append(tg, "result", "failed")...)},
		{"last success", unixSeconds(stats.LastOK),
			sample(t, families, "easdirect_discovery_last_success_timestamp_seconds", tg...)},
	}
	var attempts, failures uint64
	for i, s := range perInstance {
		if list[i].ID != s.ID {
			t.Fatalf("InstanceStats is not in the order of Instances: %+v, %+v", list, perInstance)
		}
		attempts += s.Attempts
		failures += s.Failures
		l := append(tg[:2:2], "instance", list[i].Host)
		one := func(name string, want float64) {
			checks = append(checks, struct {
				name string
				want float64
				got  float64
			}{name + " " + list[i].Host, want, sample(t, families, name, l...)})
		}
		heldOut := 0.0
		if !s.EjectedUntil.IsZero() {
			heldOut = 1
		}
		one("easdirect_instance_weight", float64(s.Weight))
		one("easdirect_instance_attempts_total", float64(s.Attempts))
		one("easdirect_instance_failures_total", float64(s.Failures))
		one("easdirect_instance_in_flight", float64(s.InFlight))
		one("easdirect_instance_latency_ewma_seconds", s.LatencyEWMA.Seconds())
		one("easdirect_instance_held_out", heldOut)
		one("easdirect_instance_held_out_until_timestamp_seconds", unixSeconds(s.EjectedUntil))
		one("easdirect_instance_reported_running", float64(s.ReportedRunning))
		one("easdirect_instance_reported_waiting", float64(s.ReportedWaiting))
		one("easdirect_instance_reported_kv_cache_usage_ratio", float64(s.ReportedKVPermille)/1000)
	}
	if attempts != 6 || failures < 2 {
		t.Fatalf("the calls did not take: %d attempts, %d failures", attempts, failures)
	}
	// Figures that are not all 0, so that a text of zeros cannot pass.
	var latency time.Duration
	var running, kv uint32
	for _, s := range perInstance {
		latency, running, kv = max(latency, s.LatencyEWMA), max(running, s.ReportedRunning),
			max(kv, s.ReportedKVPermille)
	}
	if latency == 0 || running != 2 || kv != 400 {
		t.Fatalf("the calls did not take: latency %v, running %d, kv %d", latency, running, kv)
	}
	for _, ch := range checks {
		// Durations and times go through decimal text: equal to the microsecond.
		if math.Abs(ch.got-ch.want) > 1e-6*math.Max(1, math.Abs(ch.want)) {
			t.Errorf("%s: the text says %v, the stats %v", ch.name, ch.got, ch.want)
		}
	}
	if t.Failed() {
		t.Logf("the text:\n%s", text)
	}
}

func TestTheCollectorRegistersAndGathers(t *testing.T) {
	c := busyClient(t)
	other, err := easdirect.New("static://127.0.0.1:7100", easdirect.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	reg := prometheus.NewRegistry()
	if err := reg.Register(NewCollector(c, other)); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	if got := sample(t, byName, "easdirect_instances", "target", c.Target()); got != 3 {
		t.Fatalf("easdirect_instances of %s: %v", c.Target(), got)
	}
	if got := sample(t, byName, "easdirect_instances", "target", other.Target()); got != 1 {
		t.Fatalf("easdirect_instances of %s: %v", other.Target(), got)
	}
	if f := byName["easdirect_instance_attempts_total"]; f.GetType() != dto.MetricType_COUNTER || len(f.GetMetric()) != 4 {
		t.Fatalf("easdirect_instance_attempts_total: %v", f)
	}
	// The gathered text is what a scrape serves: it names the same families as the client's.
	text, _ := c.MetricsText()
	parsed, _ := Parse(text)
	for name := range parsed {
		if byName[name] == nil {
			t.Errorf("%s is in the text but was not gathered", name)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "easdirect_instance_held_out"); err != nil || n != 4 {
		t.Fatalf("GatherAndCount: %d, %v", n, err)
	}
}

func TestAClosedClientContributesNothing(t *testing.T) {
	c := busyClient(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(c))
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Fatalf("before Close: %d samples, %v", n, err)
	}
	c.Close()
	if _, err := c.MetricsText(); !errors.Is(err, easdirect.ErrClosed) {
		t.Fatalf("MetricsText after Close: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Fatalf("after Close: %d samples, %v", n, err)
	}
}

func TestATextThatDoesNotParseIsAnError(t *testing.T) {
	if _, err := Parse("easdirect_instances{target=\"x\" 3\n"); err == nil ||
		!strings.Contains(err.Error(), "line 1") {
		t.Fatalf("Parse of a broken text: %v", err)
	}
}
