// Command llm streams LLM answers through the binding's http.RoundTripper, keyed by a session:
// every turn of one session goes to the same instance while its load allows (its prefix cache
// holds the conversation), and the instance counts as busy until its stream has ended, so
// other requests are balanced away from it meanwhile.
//
//	easdirect emulate --service my_llm --backends 0 &   # prints "listening 127.0.0.1:PORT"
//	curl -X POST http://127.0.0.1:PORT/_emulator/backends \
//	     -d '{"service":"my_llm","count":3,"kind":"llm","replace":true,"llm":{"per_token_ms":2}}'
//	go run ./llm -target eas://127.0.0.1:PORT/my_llm -session user-42 -turns 3
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strings"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

func main() {
	target := flag.String("target", "", "the service's target, e.g. eas://127.0.0.1:8080/my_llm")
	session := flag.String("session", "session-1", "the session id: the affinity key of every turn")
	turns := flag.Int("turns", 3, "turns of the conversation")
	tokens := flag.Int("tokens", 8, "tokens per answer")
	token := flag.String("token", "", "the EAS service token, if the service wants one")
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

	hc := &http.Client{Transport: client.Transport(nil,
		easdirect.WithAffinityHeader("X-Session-Id"), // the header's value is the call's key
		easdirect.WithToken(*token),                  // sent as Authorization; never printed
		easdirect.WithAttemptTimeout(10*time.Second), // to the first byte of the stream
	)}
	url := "http://" + client.Service() + "/v1/completions"
	answeredBy := map[string]int{}
	for turn := 1; turn <= *turns; turn++ {
		body := fmt.Sprintf(`{"prompt":"turn %d","max_tokens":%d,"stream":true}`, turn, *tokens)
		req, err := http.NewRequest("POST", url, strings.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Session-Id", *session)
		req.Header.Set("x-stream", "true")
		resp, err := hc.Do(req)
		if err != nil {
			log.Fatalf("turn %d: %v", turn, err)
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			log.Fatalf("turn %d: status %d", turn, resp.StatusCode)
		}
		backend := resp.Header.Get("X-Backend")
		answeredBy[backend]++
		fmt.Printf("turn %d (%s): ", turn, backend)
		// Read the server-sent events as they come; the attempt ends with the stream.
		events, done := 0, false
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			if data == "[DONE]" {
				done = true
				break
			}
			events++
			fmt.Print(".")
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil || !done {
			log.Fatalf("turn %d: the stream ended without [DONE] (%v)", turn, err)
		}
		fmt.Printf(" %d tokens\n", events)
	}
	if len(answeredBy) != 1 {
		log.Fatalf("the session's turns went to %d instances: %v", len(answeredBy), answeredBy)
	}
	fmt.Printf("session %s: %d turns, all on one instance\n", *session, *turns)
}
