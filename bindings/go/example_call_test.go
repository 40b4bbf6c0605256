package easdirect_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

// predict sends one request through the call API with the caller's own HTTP stack: the
// library picks each attempt's instance (never one tried already) and says whether to retry;
// this code only does the I/O and reports how each attempt went.
func predict(ctx context.Context, client *easdirect.Client, hc *http.Client, session string,
	body []byte) (int, []byte, error) {
	call, err := client.Call([]byte(session)) // affinity by session; nil for none
	if err != nil {
		return 0, nil, err
	}
	defer call.Close() // ends whatever attempt is still open
	for {
		inst, err := call.Next()
		if err != nil {
			return 0, nil, err // ErrNoInstance: no attempt left; ErrClosed: client closed
		}
		req, _ := http.NewRequestWithContext(ctx, "POST",
			"http://"+inst.Host+"/api/predict/my_service", bytes.NewReader(body))
		req.Header.Set("Endpoint-Load-Metrics-Format", "text") // ask for a load report
		resp, err := hc.Do(req)
		if err != nil {
			if retry, _ := call.Record(outcomeOf(ctx, err), 0, nil); retry {
				continue
			}
			return 0, nil, err
		}
		// The status decides retries; Endpoint-Load-Metrics and Retry-After feed the picks.
		if retry, _ := call.Record(easdirect.OutcomeResponse, resp.StatusCode, resp.Header); retry {
			io.Copy(io.Discard, resp.Body) // a 5xx or 429 with another instance to try
			resp.Body.Close()
			continue
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			call.Finish(easdirect.BodyBroken) // cut mid-body: the instance's failure
			return 0, nil, err
		}
		call.Finish(easdirect.BodyDone) // the attempt leaves in-flight
		return resp.StatusCode, data, nil
	}
}

// outcomeOf says how an attempt without a response went.
func outcomeOf(ctx context.Context, err error) easdirect.Outcome {
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return easdirect.OutcomeCancelled // the caller gave up: not the instance's fault
	case errors.As(err, &op) && op.Op == "dial":
		return easdirect.OutcomeConnectFailed // nothing was sent (refused, unreachable)
	case errors.As(err, &ne) && ne.Timeout():
		return easdirect.OutcomeTimeout // no response headers in time
	}
	return easdirect.OutcomeReset
}

// A request loop with retries through the call API: one instance answers 503, the call
// moves on to another.
func ExampleClient_Call() {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "predicted")
	}))
	defer ok.Close()
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	defer busy.Close()

	client, err := easdirect.New("static://" + ok.Listener.Addr().String() + "," +
		busy.Listener.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	hc := &http.Client{Timeout: 10 * time.Second}
	for range 3 {
		status, body, err := predict(ctx, client, hc, "", []byte(`{"inputs":[1,2,3]}`))
		fmt.Println(status, string(body), err)
	}
	// Output:
	// 200 predicted <nil>
	// 200 predicted <nil>
	// 200 predicted <nil>
}
