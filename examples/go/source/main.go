// Command source shows a client whose instances come from your own code rather than a target:
// here a file that some other process (a sidecar, a deploy script) rewrites, one
// "ip:port[*weight]" a line, read again at each refresh. Edit the file while it runs and the
// picks follow; delete it or empty it and the last list is kept.
//
//	go run ./source -file instances.txt -n 10 -interval 1s
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

// readInstances parses the file: "ip:port" or "ip:port*weight" a line, "#" starts a comment.
func readInstances(path string) ([]easdirect.Endpoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // a failed fetch: the client keeps its last list
	}
	var list []easdirect.Endpoint
	for n, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		hostPort, weightText, hasWeight := strings.Cut(line, "*")
		host, portText, err := net.SplitHostPort(hostPort)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n+1, err)
		}
		port, err := strconv.ParseUint(portText, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: port: %w", path, n+1, err)
		}
		weight := uint64(easdirect.DefaultWeight)
		if hasWeight {
			if weight, err = strconv.ParseUint(weightText, 10, 32); err != nil {
				return nil, fmt.Errorf("%s:%d: weight: %w", path, n+1, err)
			}
		}
		list = append(list, easdirect.Endpoint{IP: host, Port: uint16(port), Weight: uint32(weight)})
	}
	return list, nil
}

func main() {
	file := flag.String("file", "instances.txt", `the instance list, one "ip:port[*weight]" a line`)
	n := flag.Int("n", 8, "picks")
	interval := flag.Duration("interval", time.Second, "how often the file is read")
	flag.Parse()

	client, err := easdirect.NewWithSource(func() ([]easdirect.Endpoint, error) {
		return readInstances(*file) // runs on a library thread at each refresh
	}, easdirect.WithRefreshInterval(*interval))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx); err != nil {
		log.Fatal(err) // wraps the last error readInstances returned
	}
	list, _ := client.Instances()
	fmt.Printf("%d instances (weight 0: listed, never picked)\n", len(list))
	for i := range *n {
		inst, err := client.Select()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("pick %d: %s (weight %d)\n", i, inst.Host, inst.Weight)
		client.ReportSuccess(inst.ID)
	}
	if err := client.LastError(); err != nil {
		fmt.Println("last fetch:", err)
	}
}
