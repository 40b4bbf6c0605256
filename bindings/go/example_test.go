package easdirect_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

// A client of a service, and an http.Client whose requests to http://my_service/... go to its
// instances, with failover. A local server stands in for the service's instance here; in
// production the target is "eas://<endpoint>/my_service", whose service name the transport
// rewrites without an alias.
func Example() {
	instance := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "predicted by %s", r.URL.Path)
	}))
	defer instance.Close()

	client, err := easdirect.New("static://" + instance.Listener.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}

	hc := &http.Client{Transport: client.Transport(nil, easdirect.WithHostAliases("my_service"))}
	resp, err := hc.Post("http://my_service/api/predict/my_service", "application/json",
		strings.NewReader(`{"inputs":[1,2,3]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 predicted by /api/predict/my_service
}

// Picking by hand: select, call, report.
func ExampleClient_Select() {
	client, err := easdirect.New("static://10.0.0.1:50000*100,10.0.0.2:50000*0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	inst, err := client.Select()
	if err != nil {
		fmt.Println(err) // easdirect.ErrNoInstance before the first list is known
		return
	}
	fmt.Println("POST http://" + inst.Host + "/api/predict/my_service")
	callFailed := false // the outcome of the call
	if callFailed {
		client.ReportFailure(inst.ID) // ejects it for a while; the next Select avoids it
	} else {
		client.ReportSuccess(inst.ID)
	}
	// Output: POST http://10.0.0.1:50000/api/predict/my_service
}

// Watching the list of instances.
func ExampleClient_Subscribe() {
	client, err := easdirect.New("static://10.0.0.1:50000,10.0.0.2:50000")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	lists := make(chan []easdirect.Instance, 1)
	cancel, err := client.Subscribe(func(list []easdirect.Instance) {
		select { // the callback runs on a library thread: hand the list over, do not block
		case lists <- list:
		default:
		}
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cancel()
	fmt.Println(len(<-lists), "instances")
	// Output: 2 instances
}

// Instances from your own registry (Consul, a file a sidecar writes, a company service...): a
// function the library calls at each refresh. An error, a panic or an empty list keeps the last
// list, exactly as a failed EAS fetch does.
func ExampleNewWithSource() {
	registry := func() ([]easdirect.Endpoint, error) {
		// Ask the registry here, bounded by a timeout; return an error if it fails.
		return []easdirect.Endpoint{
			{IP: "10.0.0.1", Port: 50000, Weight: easdirect.DefaultWeight},
			{IP: "10.0.0.2", Port: 50000, Weight: easdirect.DefaultWeight},
			{IP: "10.0.0.3", Port: 50000, Weight: 0}, // known, never picked (draining)
		}, nil
	}
	client, err := easdirect.NewWithSource(registry, easdirect.WithRefreshInterval(time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx); err != nil {
		fmt.Println(err) // carries the registry's error: see LastError
		return
	}
	list, _ := client.Instances()
	fmt.Println(len(list), "instances")
	inst, _ := client.Select()
	fmt.Println(inst.Weight > 0)
	// Output:
	// 3 instances
	// true
}
