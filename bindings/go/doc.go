// Package easdirect is the Go binding of libeasdirect: client-side discovery and load balancing
// for Alibaba PAI-EAS inference services (and fixed lists of instances), so that a Go service
// calls the instances of an EAS service directly over the VPC instead of through the gateway.
//
// A Client discovers the instances of one target in the background (a library thread polls the
// EAS discovery API and keeps the last good list on any failure), picks one per request by
// smooth weighted round-robin without taking a lock or allocating, and ejects instances that
// the caller reports as failing:
//
//	client, err := easdirect.New("eas://1.2.3.4:8080/my_service")
//	if err != nil { ... }
//	defer client.Close()
//	if err := client.WaitReady(ctx); err != nil { ... }
//
//	// Either pick by hand...
//	inst, err := client.Select()          // "POST http://" + inst.Host + "/api/predict/my_service"
//	client.ReportFailure(inst.ID)         // or ReportSuccess
//
//	// ...or let an http.RoundTripper rewrite http://my_service/..., one Call per request:
//	// load-aware picks, the library's retries, streamed bodies counted until they end.
//	hc := &http.Client{Transport: client.Transport(nil, easdirect.WithToken(token),
//		easdirect.WithAffinityHeader("X-Session-Id"))}
//	resp, err := hc.Post("http://my_service/api/predict/my_service", "application/json", body)
//	defer resp.Body.Close() // the attempt is in flight until the body ends or is closed
//
// # Calls
//
// With an HTTP stack of your own, Client.Call drives one request and its attempts: the
// library picks each attempt's instance by load (or by affinity for a keyed call), never one
// the call tried, reads load reports, and decides retries; the caller does the I/O and records
// how each attempt went (see Call and ExampleClient_Call):
//
//	call, err := client.Call(nil) // or []byte(sessionID) for affinity
//	defer call.Close()
//	inst, err := call.Next()
//	retry, err := call.Record(easdirect.OutcomeResponse, resp.StatusCode, resp.Header)
//	call.Finish(easdirect.BodyDone)
//
// # Your own source
//
// When the instances come from a registry no target knows (Consul, a file a sidecar writes, a
// company service), give NewWithSource a function; the library calls it on its refresher
// thread at each refresh, and the cache, selection, ejection and subscriptions work as for any
// target. An error, a panic (recovered) or an empty list keeps the last list:
//
//	client, err := easdirect.NewWithSource(func() ([]easdirect.Endpoint, error) {
//		return []easdirect.Endpoint{{IP: "10.0.0.1", Port: 50000, Weight: easdirect.DefaultWeight}}, nil
//	})
//
// Weight 0 lists an instance that is never picked; DefaultWeight (100) gives equal shares.
// The function is released once, when the client is closed.
//
// # Lifetime and threads
//
// A Client is safe for concurrent use; share one per service per process. Close stops discovery
// and subscriptions at once and is safe to call more than once and concurrently with any call;
// the native client is freed by a cleanup once the Client is unreachable, so no call can be
// running on it. Subscribe callbacks run on a library background thread shared by every client
// of the process: keep them short.
//
// # Logging and metrics
//
// Every client logs through log/slog (slog.Default(), or the logger of WithLogger; nil turns it
// off) what an operator needs and nothing per request: a failing discovery once per streak
// (warn) and its recovery, list changes, ejections and back-offs with the instance, snapshot-file
// and push-stream trouble. MetricsText is the client's and every instance's figures in the
// Prometheus text format; the module github.com/easdirect/libeasdirect/bindings/go/prometheus
// has a prometheus.Collector over it, so that this module does not depend on Prometheus.
//
// # Errors
//
// Errors from the library are *Error values carrying the status Code and a message naming the
// offending key, value, URL or HTTP status; errors.Is matches them against the sentinels
// (ErrNoInstance, ErrInvalidArgument, ErrClosed, ...) by code.
//
// # Building
//
// cgo must be enabled (CGO_ENABLED=1, a C compiler). By default the package links the static
// archive the module carries, lib/linux_amd64/libeasdirect.a with include/easdirect.h (#cgo
// flags under ${SRCDIR} in link_bundled.go): a consumer needs nothing else, no pkg-config, no
// library path, and its binaries need no shared library. A release's module zip (bindings/go/
// dist.sh) carries both files; a checkout does not commit them: there, run go generate
// (bundle.sh copies them from the repository's make build). Elsewhere than linux/amd64, or for
// an installed libeasdirect, build with a tag that links through pkg-config instead:
//
//	go build -tags easdirect_pkgconfig ./...   # libeasdirect.so, from easdirect.pc
//	go build -tags easdirect_static ./...      # libeasdirect.a -lpthread -ldl -lm, from easdirect-static.pc
//
// When the package loads it checks the ABI version of the library it got (a shared library
// found at run time may be another one than the header it was compiled against; it needs ABI
// 1.4 or a later 1.x): on a mismatch New and NewWithSource return an error wrapping
// ErrABIMismatch that says which versions met and what to do.
//
// Through pkg-config against the repository's own build, without installing anything:
//
//	cargo build --release -p easdirect            # target/release/libeasdirect.{so,a}
//	bindings/go/pkgconfig.sh                      # writes bindings/go/build/easdirect{,-static}.pc
//	export PKG_CONFIG_PATH=$PWD/bindings/go/build
//	go build -tags easdirect_pkgconfig ./...      # the binary finds the .so through an rpath
//
// Against an installed copy (libeasdirect.so and .a in $PREFIX/lib, easdirect.h in
// $PREFIX/include):
//
//	bindings/go/pkgconfig.sh --prefix /usr/local --out /usr/local/lib/pkgconfig
//	go build -tags easdirect_pkgconfig ./...      # run ldconfig once for the .so
package easdirect
