// Command pick shows the Go API by hand: it discovers a service, picks instances, reports the
// outcome of each (made-up) call, and prints what the client saw.
//
//	go run ./pick -target eas://127.0.0.1:8080/my_service -n 10
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

func main() {
	target := flag.String("target", "static://10.0.0.1:50000*3,10.0.0.2:50000*1", "the service's target")
	n := flag.Int("n", 8, "picks")
	flag.Parse()

	client, err := easdirect.New(*target)
	if err != nil {
		log.Fatal(err) // names the bad part of the target or option
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx); err != nil {
		log.Fatal(err) // carries the last discovery error
	}

	cancelWatch, err := client.Subscribe(func(list []easdirect.Instance) {
		log.Printf("the list has %d instances", len(list))
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cancelWatch()

	for i := range *n {
		inst, err := client.Select()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("pick %d: %s (id %016x, weight %d)\n", i, inst.Host, inst.ID, inst.Weight)
		client.ReportSuccess(inst.ID) // or ReportFailure(inst.ID) when the call failed
	}
	st, _ := client.Stats()
	fmt.Printf("stats: %d instances, %d ejected, list generation %d\n", st.Instances, st.Ejected, st.Generation)
}
