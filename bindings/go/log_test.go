package easdirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// captured is a slog.Handler that keeps every record, and counts Enabled calls by level.
type captured struct {
	level   slog.Level // the lowest level enabled
	mu      sync.Mutex
	records []capturedRecord
	enabled map[slog.Level]int
	handle  func() // when set, runs in each Handle (to block it)
}

type capturedRecord struct {
	time  time.Time
	level slog.Level
	msg   string
	attrs map[string]string
}

func capture(level slog.Level) *captured {
	return &captured{level: level, enabled: map[slog.Level]int{}}
}

func (h *captured) Enabled(_ context.Context, l slog.Level) bool {
	h.mu.Lock()
	h.enabled[l]++
	h.mu.Unlock()
	return l >= h.level
}

func (h *captured) Handle(_ context.Context, r slog.Record) error {
	rec := capturedRecord{time: r.Time, level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	h.records = append(h.records, rec)
	block := h.handle
	h.mu.Unlock()
	if block != nil {
		block()
	}
	return nil
}

func (h *captured) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captured) WithGroup(string) slog.Handler      { return h }

func (h *captured) all() []capturedRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]capturedRecord(nil), h.records...)
}

// count is the number of records at level whose message contains part.
func (h *captured) count(level slog.Level, part string) int {
	n := 0
	for _, r := range h.all() {
		if r.level == level && strings.Contains(r.msg, part) {
			n++
		}
	}
	return n
}

func (h *captured) enabledCalls(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.enabled[level]
}

// waitFor waits for a record at level containing part, and returns its message.
func (h *captured) waitFor(t *testing.T, level slog.Level, part string) string {
	t.Helper()
	var msg string
	eventually(t, fmt.Sprintf("a %v line with %q", level, part), func() bool {
		for _, r := range h.all() {
			if r.level == level && strings.Contains(r.msg, part) {
				msg = r.msg
				return true
			}
		}
		return false
	})
	return msg
}

func (h *captured) dump(t *testing.T) {
	for _, r := range h.all() {
		t.Logf("%v %s %v", r.level, r.msg, r.attrs)
	}
}

func TestClientsLogThroughSlogDefault(t *testing.T) {
	h := capture(slog.LevelInfo)
	prev := slog.Default()
	slog.SetDefault(slog.New(h))
	defer slog.SetDefault(prev)
	c := mustNew(t, "static://127.0.0.1:1,127.0.0.1:2")
	msg := h.waitFor(t, slog.LevelInfo, "list 1: 2 instances (+2 -0)")
	if want := c.Target() + ": "; !strings.HasPrefix(msg, want) {
		t.Fatalf("the line %q does not start with %q", msg, want)
	}
	for _, r := range h.all() {
		// (SetDefault also routes the log package here: only the client's lines count.)
		if strings.HasPrefix(r.msg, c.Target()) && r.attrs["component"] != "easdirect" {
			t.Fatalf("a line without component=easdirect: %+v", r)
		}
	}
}

func TestTheLevelsSentAreTheHandlersAndNoHandlerMeansNoLogging(t *testing.T) {
	for _, l := range []*slog.Logger{nil, slog.New(slog.DiscardHandler), {}} {
		c := mustNew(t, "static://127.0.0.1:1", WithLogger(l))
		if c.log != nil {
			t.Fatalf("WithLogger(%v) gave the library a log function", l)
		}
	}

	// A handler enabled from Warn: the library is asked for warnings and errors only, so
	// that no info line is ever offered to the handler (nor counts in the rate limit).
	d := newDiscovery(t, "svc")
	d.set("127.0.0.1:1")
	h := capture(slog.LevelWarn)
	c := mustNew(t, d.target(), WithLogger(slog.New(h)))
	if err := c.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	infoAtNew := h.enabledCalls(slog.LevelInfo)
	before, _ := c.Stats()
	d.fail(503)
	h.waitFor(t, slog.LevelWarn, "discovery failed")
	d.set("127.0.0.1:1", "127.0.0.1:2") // a recovery and a new list: two info lines
	eventually(t, "a new list", func() bool {
		st, _ := c.Stats()
		return st.Generation > before.Generation
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := h.enabledCalls(slog.LevelInfo); got != infoAtNew {
		t.Fatalf("info lines reached the logger (Enabled(Info) called %d times after New)", got-infoAtNew)
	}
	for _, r := range h.all() {
		if r.level < slog.LevelWarn {
			t.Fatalf("a line below the handler's level: %+v", r)
		}
	}
}

func TestAFailingUpstreamLogsOneWarningPerStreakAndOneInfoOnRecovery(t *testing.T) {
	h := capture(slog.LevelDebug)
	e, c, _ := emulatedService(t, WithLogger(slog.New(h)))
	recovered := regexp.MustCompile(`discovery recovered after (\d+) failed fetches`)
	for streak := 1; streak <= 2; streak++ {
		before, _ := c.Stats()
		e.do(t, "PUT", "/fault", map[string]any{"fault": "status", "status": 503})
		eventually(t, "three failed fetches", func() bool {
			st, _ := c.Stats()
			return st.RefreshFailed >= before.RefreshFailed+3
		})
		e.do(t, "PUT", "/fault", map[string]any{"fault": "none"})
		// The recovery line comes after every line of the streak (one queue, in order).
		eventually(t, fmt.Sprintf("recovery %d", streak), func() bool {
			return h.count(slog.LevelInfo, "discovery recovered after") == streak
		})
		after, _ := c.Stats()
		if got := h.count(slog.LevelWarn, "discovery failed, keeping the last list: "); got != streak {
			h.dump(t)
			t.Fatalf("streak %d of %d failed fetches: %d warnings in all, want %d", streak,
				after.RefreshFailed-before.RefreshFailed, got, streak)
		}
		var last []string
		for _, r := range h.all() {
			if m := recovered.FindStringSubmatch(r.msg); m != nil {
				last = m
			}
		}
		n, _ := strconv.ParseUint(last[1], 10, 64)
		if want := after.RefreshFailed - before.RefreshFailed; n != want {
			t.Fatalf("%q: the stats counted %d failed fetches", last[0], want)
		}
	}
	warn := h.waitFor(t, slog.LevelWarn, "discovery failed")
	if !strings.Contains(warn, "http://"+e.addr+"/") || !strings.Contains(warn, "503") {
		t.Fatalf("the warning names neither the URL nor the status: %q", warn)
	}
}

func TestAnEjectionLogsTheInstanceAndItsReturn(t *testing.T) {
	h := capture(slog.LevelInfo)
	e, c, bs := emulatedService(t, WithLogger(slog.New(h)),
		WithEjectionTime(200*time.Millisecond, 400*time.Millisecond))
	bad := bs[1].Port
	var host string
	list, _ := c.Instances()
	for _, inst := range list {
		if int(inst.Port) == bad {
			host = inst.Host
		}
	}
	if host == "" {
		t.Fatalf("no instance on port %d in %+v", bad, list)
	}
	e.setMode(t, bad, "status", 503)
	hc := httpClient(c)
	for e.hits(t, bad) == 0 {
		if resp, _ := post(t, hc, "x"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	h.waitFor(t, slog.LevelInfo, "instance "+host+" ejected for ")
	h.waitFor(t, slog.LevelInfo, "instance "+host+" back in rotation")
	for _, b := range bs {
		if b.Port != bad && h.count(slog.LevelInfo, fmt.Sprintf(":%d ejected", b.Port)) != 0 {
			h.dump(t)
			t.Fatalf("a healthy instance (port %d) was logged as ejected", b.Port)
		}
	}
}

func TestNoSecretFromTheOptionsOrTheTargetReachesALogLine(t *testing.T) {
	h := capture(slog.LevelDebug)
	secrets := []string{"pa55-w0rd-1", "s3cret-k3y-2"}
	// One secret as an option, one as a query parameter of the target.
	c := mustNew(t, "nacos://127.0.0.1:1/svc?refresh_interval_ms=20&secret_key="+secrets[1],
		WithLogger(slog.New(h)), WithOption("nacos_transport", "http"),
		WithOption("username", "nacos-user"), WithOption("password", secrets[0]),
		WithOption("access_key", "ak-id"))
	h.waitFor(t, slog.LevelWarn, "discovery failed")
	eventually(t, "five failed fetches", func() bool {
		st, _ := c.Stats()
		return st.RefreshFailed >= 5
	})
	text, err := c.MetricsText()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	lines := h.all()
	for _, r := range lines {
		for _, s := range secrets {
			if strings.Contains(r.msg, s) || strings.Contains(fmt.Sprint(r.attrs), s) {
				t.Errorf("a secret in %q", r.msg)
			}
		}
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("a secret in the metrics text:\n%s", text)
		}
	}
	if len(lines) == 0 || !strings.Contains(lines[0].msg, "127.0.0.1:1") {
		t.Fatalf("the lines do not name the server: %+v", lines)
	}
}

// liveSinks are the log sinks the library holds now.
func liveSinks() map[*logSink]bool {
	m := map[*logSink]bool{}
	liveLogSinks.Range(func(k, _ any) bool {
		m[k.(*logSink)] = true
		return true
	})
	return m
}

func TestTheLogFunctionEndsOnceTheClientIsClosedAndFreed(t *testing.T) {
	h := capture(slog.LevelInfo)
	var sink *logSink
	func() {
		c, err := New("static://127.0.0.1:1", WithLogger(slog.New(h)))
		if err != nil {
			t.Fatal(err)
		}
		sink = c.log
		if sink == nil || !liveSinks()[sink] {
			t.Fatal("the client has no log function")
		}
		h.waitFor(t, slog.LevelInfo, "list 1")
		c.Close()
		runtime.GC()
		// Closed, not yet freed: the library holds the function until eas_client_free.
		if !liveSinks()[sink] {
			t.Fatal("the log function ended before the client was freed")
		}
		runtime.KeepAlive(c)
	}()
	// The cleanup frees the client once it is unreachable: then the function ends (its
	// handle deleted, its goroutine done).
	eventually(t, "the log function's end", func() bool {
		runtime.GC()
		return !liveSinks()[sink]
	})

	// A create that fails lets go of the log function at once.
	before := liveSinks()
	if _, err := New("eas://127.0.0.1:1", WithLogger(slog.New(h))); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("New with a target without a service: %v", err)
	}
	for s := range liveSinks() {
		if !before[s] {
			t.Fatal("a failed New kept its log function")
		}
	}
}

// A handler that blocks holds up its own client's lines only: the library's log thread, and
// every other client's logger, go on. Close waits for the line in the handler's hands, and no
// line reaches the handler after it.
func TestASlowLoggerDelaysOnlyItsOwnClientAndCloseWaitsForIt(t *testing.T) {
	release := make(chan struct{})
	var blocked atomic.Int64
	slow := capture(slog.LevelInfo)
	slow.handle = func() {
		blocked.Add(1)
		<-release
	}
	d := newDiscovery(t, "svc")
	d.set("127.0.0.1:1")
	c := mustNew(t, d.target(), WithLogger(slog.New(slow)))
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before c's Close, which would wait for the handler
	eventually(t, "the slow handler to hold a line", func() bool { return blocked.Load() == 1 })

	fast := capture(slog.LevelInfo)
	other := mustNew(t, "static://127.0.0.1:2", WithLogger(slog.New(fast)))
	fast.waitFor(t, slog.LevelInfo, "list 1")
	_ = other

	// The slow client's refreshes and lines go on meanwhile (queued, or dropped and counted).
	before, _ := c.Stats()
	d.fail(503)
	eventually(t, "refreshes while the handler blocks", func() bool {
		st, _ := c.Stats()
		return st.RefreshFailed >= before.RefreshFailed+3
	})

	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while the handler held a line of the client")
	case <-time.After(100 * time.Millisecond):
	}
	unblock()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return once the handler did")
	}
	n := len(slow.all())
	time.Sleep(50 * time.Millisecond)
	if got := len(slow.all()); got != n || n != 1 {
		t.Fatalf("%d lines reached the handler, %d of them after Close: the queued ones must be dropped", got, got-n)
	}
}

// A logger that falls behind loses lines, counted: the count goes out with the next line the
// channel takes.
func TestLinesAChannelCannotTakeAreCountedInTheNextLine(t *testing.T) {
	s := &logSink{lines: make(chan logLine, 1)}
	s.enqueue(slog.LevelInfo, "one")
	s.enqueue(slog.LevelWarn, "two")   // dropped
	s.enqueue(slog.LevelInfo, "three") // dropped
	if got := <-s.lines; got.msg != "one" {
		t.Fatalf("first line %q", got.msg)
	}
	s.enqueue(slog.LevelInfo, "four")
	got := <-s.lines
	if want := "four (2 earlier lines dropped: the logger was behind)"; got.msg != want {
		t.Fatalf("got %q, want %q", got.msg, want)
	}
	s.enqueue(slog.LevelInfo, "five")
	if got := <-s.lines; got.msg != "five" {
		t.Fatalf("the count went out twice: %q", got.msg)
	}
}

// A record's time is when the library handed the line over, not when a late logger got it.
func TestARecordHasTheTimeOfItsLine(t *testing.T) {
	h := capture(slog.LevelInfo)
	s, _ := newLogSink(slog.New(h), true)
	s.enqueue(slog.LevelInfo, "a line")
	time.Sleep(20 * time.Millisecond)
	handed := time.Now()
	go s.run()
	rec := h.waitFor(t, slog.LevelInfo, "a line")
	close(s.lines)
	for _, r := range h.all() {
		if r.msg == rec && !r.time.Before(handed) {
			t.Fatalf("the record's time %v is not the line's (before %v)", r.time, handed)
		}
	}
}

// The library sends at most 10 lines a second per client: a list that changes at every 20 ms
// refresh loses lines, counted in the metrics and in the next line that goes out.
func TestTheRateLimitDropsLinesAndSaysHowMany(t *testing.T) {
	h := capture(slog.LevelInfo)
	d := newDiscovery(t, "svc")
	d.set("127.0.0.1:1")
	c := mustNew(t, d.target(), WithLogger(slog.New(h)))
	dropped := regexp.MustCompile(`easdirect_log_lines_dropped_total\{[^}]*\} (\d+)`)
	droppedTotal := func() uint64 {
		text, err := c.MetricsText()
		if err != nil {
			t.Fatal(err)
		}
		m := dropped.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no easdirect_log_lines_dropped_total in\n%s", text)
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n
	}
	flip := 0
	change := func() {
		flip++
		d.set("127.0.0.1:1", fmt.Sprintf("127.0.0.1:%d", 2+flip%2))
	}
	eventually(t, "lines dropped by the rate limit", func() bool {
		change()
		time.Sleep(25 * time.Millisecond) // about one refresh: a new list each time
		return droppedTotal() > 0
	})
	note := regexp.MustCompile(`\((\d+) earlier lines dropped: at most 10 a second\)$`)
	eventually(t, "a line with the count of those dropped", func() bool {
		change()
		time.Sleep(100 * time.Millisecond)
		for _, r := range h.all() {
			if note.MatchString(r.msg) {
				return true
			}
		}
		return false
	})
	var said uint64
	for _, r := range h.all() {
		if m := note.FindStringSubmatch(r.msg); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			said += n
		}
	}
	if total := droppedTotal(); said == 0 || said > total {
		h.dump(t)
		t.Fatalf("the lines count %d dropped, the metrics %d", said, total)
	}
}
