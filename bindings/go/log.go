package easdirect

/*
#include <stdint.h>
#include <easdirect.h>

// Defined in callbacks.go (//export).
extern void easdirectLog(void *user_data, int32_t level, char *message);
extern void easdirectOnLogEnd(void *user_data);

// The user data is a cgo.Handle: an integer, passed as a pointer-sized value that C never
// dereferences.
static enum eas_status easdirect_set_log(eas_options *o, uintptr_t handle, int32_t max_level) {
	return eas_options_set_log(o, (eas_log_fn)easdirectLog, (void *)handle, easdirectOnLogEnd,
	                           max_level);
}
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
)

// WithLogger sends the client's log lines to l instead of slog.Default(). nil, or a logger
// whose handler enables no level (a discard handler), turns logging off. The threshold is the
// handler's: the client asks Enabled once, when it is made, which levels to send.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { s.logger, s.loggerSet = l, true }
}

// liveLogSinks holds the log sinks whose user data the library still holds (for tests).
var liveLogSinks sync.Map // *logSink → struct{}

// logQueueLen bounds a client's lines waiting for its logger: the library sends at most 10 a
// second, so a logger 10 s behind starts losing lines (counted, and the count logged).
const logQueueLen = 100

// logSink is what the cgo.Handle given to eas_options_set_log refers to: one client's logger
// and the goroutine that feeds it. The library's log thread serves every client of the
// process, so its callback only copies the line into a channel, without blocking; the
// goroutine hands the lines to the logger one at a time, in order, so that a slow handler
// delays only its own client's lines. The handle is deleted, and the channel closed, in the
// library's free_user_data callback, which runs once, after the last line, when the options
// and the client have been freed. The sink does not refer to the Client, so that the Client
// can become unreachable (and be freed) without Close.
type logSink struct {
	logger *slog.Logger
	lines  chan logLine
	// dropped counts lines the channel could not take since the last one it took (written by
	// the library's log thread only; atomic because cgo callbacks need not share a goroutine).
	dropped atomic.Uint64

	mu         sync.Mutex
	delivered  sync.Cond // signalled when a delivery ends
	closed     bool      // Close ran: the lines still queued are dropped
	delivering bool      // a line is in the logger's hands now
}

type logLine struct {
	at    time.Time // when the library handed it over: the record's time, however late it goes out
	level slog.Level
	msg   string
}

// newLogSink is the sink for l (slog.Default() when unset), or nil when its handler enables
// no level, with the highest C level (1 error .. 4 debug) to ask the library for.
func newLogSink(l *slog.Logger, set bool) (*logSink, C.int32_t) {
	if !set {
		l = slog.Default()
	}
	if l == nil || l.Handler() == nil {
		return nil, 0
	}
	ctx := context.Background()
	for level := C.int32_t(4); level >= 1; level-- {
		if l.Handler().Enabled(ctx, slogLevel(level)) {
			s := &logSink{logger: l, lines: make(chan logLine, logQueueLen)}
			s.delivered.L = &s.mu
			return s, level
		}
	}
	return nil, 0
}

// attach gives the options s as their log function, up to maxLevel, and starts its goroutine.
func (s *logSink) attach(o *C.eas_options, maxLevel C.int32_t) error {
	h := cgo.NewHandle(s)
	liveLogSinks.Store(s, struct{}{})
	if st := C.easdirect_set_log(o, C.uintptr_t(h), maxLevel); st != C.EAS_STATUS_OK {
		h.Delete() // a refused call takes no ownership of the user data
		liveLogSinks.Delete(s)
		return statusError(st)
	}
	go s.run()
	return nil
}

// slogLevel maps the C ABI's levels: 1 error, 2 warn, 3 info, 4 debug.
func slogLevel(level C.int32_t) slog.Level {
	switch level {
	case 1:
		return slog.LevelError
	case 2:
		return slog.LevelWarn
	case 4:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// enqueue is called on the library's log thread (calls never overlap) and never blocks. A line
// the channel cannot take is counted, and the count goes out with the next line.
func (s *logSink) enqueue(level slog.Level, msg string) {
	dropped := s.dropped.Load()
	if dropped > 0 {
		msg += fmt.Sprintf(" (%d earlier lines dropped: the logger was behind)", dropped)
	}
	select {
	case s.lines <- logLine{at: time.Now(), level: level, msg: msg}:
		s.dropped.Store(0)
	default:
		s.dropped.Store(dropped + 1)
	}
}

// end is the library's free_user_data: no line comes after it.
func (s *logSink) end() {
	close(s.lines)
	liveLogSinks.Delete(s)
}

func (s *logSink) run() {
	for line := range s.lines {
		s.deliver(line)
	}
}

// deliver hands one line to the logger, unless the client was closed meanwhile. A panic in the
// handler is not recovered: as in any goroutine, it ends the program with its stack.
func (s *logSink) deliver(line logLine) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.delivering = true
	s.mu.Unlock()
	// What Logger.LogAttrs does, with the line's own time.
	ctx, h := context.Background(), s.logger.Handler()
	if h.Enabled(ctx, line.level) {
		r := slog.NewRecord(line.at, line.level, line.msg, 0)
		r.AddAttrs(slog.String("component", "easdirect"))
		_ = h.Handle(ctx, r) // a handler's error has nowhere to go, as with Logger.Log
	}
	s.mu.Lock()
	s.delivering = false
	s.mu.Unlock()
	s.delivered.Broadcast()
}

// close drops the lines still queued and waits for one in the logger's hands: once it returns,
// no line reaches the logger. Called after eas_client_close, from which on the library sends
// no line.
func (s *logSink) close() {
	s.mu.Lock()
	s.closed = true
	for s.delivering {
		s.delivered.Wait()
	}
	s.mu.Unlock()
}
