package easdirect_test

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

// A client's lines go to a logger of one's own: here JSON on standard error, warnings and
// errors only (the library is asked for nothing below the handler's level).
func ExampleWithLogger() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client, err := easdirect.New("eas://10.0.0.1:8080/my_service",
		easdirect.WithLogger(logger.With("service", "my_service")))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	// easdirect.WithLogger(nil) turns a client's logging off.
}

// The metrics text, as a /metrics handler would serve it (Content-Type
// "text/plain; version=0.0.4").
func ExampleClient_MetricsText() {
	client, err := easdirect.New("static://10.0.0.1:50000,10.0.0.2:50000", easdirect.WithLogger(nil))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	text, err := client.MetricsText()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "easdirect_instances{") || strings.HasPrefix(line, "easdirect_instance_weight{") {
			fmt.Println(line)
		}
	}
	// Output:
	// easdirect_instances{target="static://10.0.0.1:50000,10.0.0.2:50000"} 2
	// easdirect_instance_weight{target="static://10.0.0.1:50000,10.0.0.2:50000",instance="10.0.0.1:50000"} 100
	// easdirect_instance_weight{target="static://10.0.0.1:50000,10.0.0.2:50000",instance="10.0.0.2:50000"} 100
}
