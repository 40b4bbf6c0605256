package easdirect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// nulOptionCases are options with a NUL byte whose part before the NUL is a valid option on its
// own: a binding that cut the string where C stops reading would accept them.
var nulOptionCases = []struct {
	name       string
	key, value string
	names      string // what the error message must name
}{
	{"key", "refresh_interval_ms\x00x", "100", `option key "refresh_interval_ms\x00x"`},
	{"value", "refresh_interval_ms", "100\x00junk", `option "refresh_interval_ms"`},
}

func TestANULInAnOptionIsRejectedNamingIt(t *testing.T) {
	fetch := func() ([]Endpoint, error) { return []Endpoint{{IP: "10.0.0.1", Port: 80}}, nil }
	for _, tc := range nulOptionCases {
		// What C would have read is valid.
		mustNew(t, "static://10.0.0.1:80", WithOption(beforeNUL(tc.key), beforeNUL(tc.value)))
		for _, create := range []struct {
			name string
			new  func(...Option) (*Client, error)
		}{
			{"New", func(o ...Option) (*Client, error) { return New("static://10.0.0.1:80", o...) }},
			{"NewWithSource", func(o ...Option) (*Client, error) { return NewWithSource(fetch, o...) }},
		} {
			c, err := create.new(WithOption(tc.key, tc.value))
			var e *Error
			if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &e) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("%s with a NUL in the option %s: %v", create.name, tc.name, err)
			}
			if !strings.Contains(e.Message, tc.names) || !strings.Contains(e.Message, "NUL") ||
				strings.IndexByte(e.Message, 0) >= 0 {
				t.Fatalf("%s, a NUL in the option %s: message %q does not name %s (escaped)",
					create.name, tc.name, e.Message, tc.names)
			}
		}
	}
}

func beforeNUL(s string) string {
	before, _, _ := strings.Cut(s, "\x00")
	return before
}

func TestInvalidUTF8IsAnInvalidArgumentNamingIt(t *testing.T) {
	// A Go string may hold any bytes; the C ABI takes UTF-8 only. "\xed\xa0\x80" is a UTF-16
	// surrogate encoded as if it were a character (WTF-8, CESU-8), which UTF-8 forbids.
	for _, bad := range []string{"\xff", "\xed\xa0\x80"} {
		cases := []struct {
			names string
			new   func() (*Client, error)
		}{
			{"target", func() (*Client, error) { return New("static://10.0.0.1:80" + bad) }},
			{fmt.Sprintf("option key %q", "refresh_interval_ms"+bad), func() (*Client, error) {
				return New("static://10.0.0.1:80", WithOption("refresh_interval_ms"+bad, "100"))
			}},
			{`the value of option "snapshot_file"`, func() (*Client, error) {
				return New("static://10.0.0.1:80", WithSnapshotFile(t.TempDir()+"/snap"+bad))
			}},
		}
		for _, tc := range cases {
			c, err := tc.new()
			var e *Error
			if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &e) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("%q in %s: %v", bad, tc.names, err)
			}
			if !strings.Contains(e.Message, tc.names) || !strings.Contains(e.Message, "UTF-8") {
				t.Fatalf("%q in %s: message %q does not name it", bad, tc.names, e.Message)
			}
		}
	}
}

func TestEveryMethodOfANilOrZeroClientIsErrClosed(t *testing.T) {
	for _, c := range []*Client{nil, {}} {
		name := "a zero Client"
		if c == nil {
			name = "a nil *Client"
		}
		calls := map[string]func() error{
			"Select":          func() error { _, err := c.Select(); return err },
			"SelectExcluding": func() error { _, err := c.SelectExcluding(1, 2); return err },
			"ReportFailure":   func() error { return c.ReportFailure(1) },
			"ReportSuccess":   func() error { return c.ReportSuccess(1) },
			"Instances":       func() error { _, err := c.Instances(); return err },
			"Stats":           func() error { _, err := c.Stats(); return err },
			"InstanceStats":   func() error { _, err := c.InstanceStats(); return err },
			"Call":            func() error { _, err := c.Call([]byte("k"), CallNotIdempotent()); return err },
			"LastError":       c.LastError,
			"WaitReady":       func() error { return c.WaitReady(context.Background()) },
			"Subscribe":       func() error { _, err := c.Subscribe(func([]Instance) {}); return err },
			"Close":           c.Close,
			"Transport": func() error {
				rt := c.Transport(nil, WithHostAliases("svc"))
				req, _ := http.NewRequest("GET", "http://svc/", nil)
				resp, err := rt.RoundTrip(req)
				if resp != nil {
					resp.Body.Close()
				}
				return err
			},
		}
		for method, call := range calls {
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("%s on %s panicked: %v", method, name, r)
					}
				}()
				err = call()
			}()
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("%s on %s: %v, want an error matching ErrClosed", method, name, err)
			}
		}
		if s := c.Service(); s != "" {
			t.Fatalf("Service of %s: %q", name, s)
		}
		if s := c.Target(); s != "" {
			t.Fatalf("Target of %s: %q", name, s)
		}
	}
	// The check costs a working client nothing it relies on.
	c := mustNew(t, "static://10.0.0.1:80")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select(); err != nil {
		t.Fatal(err)
	}
}
