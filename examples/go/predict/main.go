// Command predict calls an EAS service through the binding's http.RoundTripper: requests to
// http://{service}/... go straight to an instance, and fail over to another one on a connection
// error, a timeout, a 5xx or a 429.
//
//	easdirect emulate --service my_service --backends 3 &   # prints "listening 127.0.0.1:PORT"
//	go run ./predict -target eas://127.0.0.1:PORT/my_service -n 20 -metrics
//
// The client's log lines (the list it got, ejections, a failing discovery) go to log/slog's
// default logger, here standard error; -metrics prints the client's Prometheus samples after
// the requests (what a /metrics endpoint would serve, without the HELP and TYPE lines).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

func main() {
	target := flag.String("target", "", "the service's target, e.g. eas://127.0.0.1:8080/my_service")
	n := flag.Int("n", 10, "requests")
	metrics := flag.Bool("metrics", false, "print the client's metrics samples after the requests")
	flag.Parse()
	if *target == "" {
		log.Fatal("-target is required")
	}

	client, err := easdirect.New(*target)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	hc := &http.Client{
		// A hung instance costs one attempt of 3 s, then the request moves on.
		Transport: client.Transport(nil, easdirect.WithAttemptTimeout(3*time.Second)),
		Timeout:   10 * time.Second, // bounds all attempts of one request together
	}
	service := client.Service()
	failures := 0
	for i := range *n {
		resp, err := hc.Post("http://"+service+"/api/predict/"+service, "application/json",
			strings.NewReader(fmt.Sprintf(`{"request":%d}`, i)))
		if err != nil {
			failures++
			log.Printf("request %d: %v", i, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("request %d: %d %s\n", i, resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode >= 400 {
			failures++
		}
	}
	if *metrics {
		text, err := client.MetricsText()
		if err != nil {
			log.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			if !strings.HasPrefix(line, "#") {
				fmt.Println(line)
			}
		}
	}
	if failures > 0 {
		log.Fatalf("%d of %d requests failed", failures, *n)
	}
}
