package easdirectprom_test

import (
	"fmt"
	"log"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
	easdirectprom "github.com/easdirect/libeasdirect/bindings/go/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

func Example() {
	client, err := easdirect.New("static://10.0.0.1:50000,10.0.0.2:50000")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	reg := prometheus.NewRegistry() // or prometheus.DefaultRegisterer
	reg.MustRegister(easdirectprom.NewCollector(client))
	// http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "easdirect_instances" {
			fmt.Println(f.GetName(), f.GetMetric()[0].GetGauge().GetValue())
		}
	}
	// Output: easdirect_instances 2
}
