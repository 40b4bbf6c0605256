// Package easdirectprom exposes the metrics of easdirect clients to Prometheus: a
// prometheus.Collector over Client.MetricsText. It is a module of its own, so that the binding
// itself does not depend on the Prometheus libraries:
//
//	import easdirectprom "github.com/easdirect/libeasdirect/bindings/go/prometheus"
//
//	prometheus.MustRegister(easdirectprom.NewCollector(client))
//
// The metric names and labels are the library's (listed in the repository's README): every
// sample has target, the per-instance ones also instance ("host:port").
package easdirectprom

import (
	"errors"
	"fmt"
	"strings"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Collector collects the metrics of its clients at each scrape: it parses each client's
// MetricsText and hands the families on as constant metrics. It is an unchecked collector
// (Describe sends nothing): the instances, and so the label values, change with the lists.
type Collector struct {
	clients []*easdirect.Client
}

// NewCollector is a collector of the metrics of clients. Their targets must differ (two
// clients of one target would give the same samples twice, which the registry reports as a
// gather error). A closed client contributes nothing: unregister the collector when done.
func NewCollector(clients ...*easdirect.Client) *Collector {
	return &Collector{clients: append([]*easdirect.Client(nil), clients...)}
}

// Describe sends nothing: the collector is unchecked.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect sends the samples of every client that is not closed. A text that does not parse
// (it would be a bug of the library) goes out as an invalid metric, so that the scrape reports
// it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, client := range c.clients {
		if err := collect(client, ch); err != nil {
			ch <- prometheus.NewInvalidMetric(
				prometheus.NewDesc("easdirect_error", "easdirect metrics that could not be read", nil, nil),
				fmt.Errorf("easdirect metrics of %q: %w", client.Target(), err))
		}
	}
}

func collect(client *easdirect.Client, ch chan<- prometheus.Metric) error {
	text, err := client.MetricsText()
	if errors.Is(err, easdirect.ErrClosed) {
		return nil
	}
	if err != nil {
		return err
	}
	families, err := Parse(text)
	if err != nil {
		return err
	}
	for name, family := range families {
		var kind prometheus.ValueType
		switch family.GetType() {
		case dto.MetricType_COUNTER:
			kind = prometheus.CounterValue
		case dto.MetricType_GAUGE:
			kind = prometheus.GaugeValue
		case dto.MetricType_UNTYPED:
			kind = prometheus.UntypedValue
		default:
			return fmt.Errorf("metric %s: type %v is not a counter or a gauge", name, family.GetType())
		}
		for _, m := range family.GetMetric() {
			names := make([]string, len(m.GetLabel()))
			values := make([]string, len(m.GetLabel()))
			for i, l := range m.GetLabel() {
				names[i], values[i] = l.GetName(), l.GetValue()
			}
			metric, err := prometheus.NewConstMetric(
				prometheus.NewDesc(name, family.GetHelp(), names, nil), kind, value(m), values...)
			if err != nil {
				return fmt.Errorf("metric %s: %w", name, err)
			}
			ch <- metric
		}
	}
	return nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return m.GetUntyped().GetValue()
}

// Parse reads a metrics text (Client.MetricsText) into its metric families, by name.
func Parse(text string) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	return parser.TextToMetricFamilies(strings.NewReader(text))
}
