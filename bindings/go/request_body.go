package easdirect

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
)

// bodySource gives each attempt of a request the whole body, or says that it cannot.
//
//   - no body: nothing to replay;
//   - Request.GetBody: the first attempt sends Request.Body, later ones a fresh GetBody;
//   - an *os.File of a regular file: every attempt reads it from where it stood (ReadAt, so an
//     attempt's leftover writer cannot move another's offset); the file is closed when the
//     request is over;
//   - any other body: read through a handle; another attempt gets it only while no byte of it
//     was read (a refused connection), and then the earlier handle reads nothing more.
type bodySource struct {
	orig     io.ReadCloser // the request's body; nil for none
	getBody  func() (io.ReadCloser, error)
	next     io.ReadCloser // from getBody, for the next attempt (rewind got it)
	sentOrig bool          // orig was given to the base transport, which closes it

	file       *os.File // a regular file body
	off, size  int64
	once       *oneShot
	closedOnce sync.Once
}

func newBodySource(req *http.Request) *bodySource {
	b := &bodySource{}
	if req.Body == nil || req.Body == http.NoBody {
		return b
	}
	b.orig = req.Body
	if req.GetBody != nil {
		b.getBody = req.GetBody
		return b
	}
	if f, ok := req.Body.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				b.file, b.off, b.size = f, off, max(st.Size()-off, 0)
				if req.ContentLength > 0 {
					b.size = req.ContentLength
				}
				return b
			}
		}
	}
	b.once = &oneShot{r: req.Body}
	return b
}

// set gives out the body of its attempt (1 for the first; a later one after rewind said yes).
func (b *bodySource) set(out *http.Request, attempt int) {
	switch {
	case b.orig == nil:
	case b.getBody != nil:
		if attempt == 1 {
			out.Body = b.orig
			b.sentOrig = true
			return
		}
		out.Body, b.next = b.next, nil
	case b.file != nil:
		if b.size == 0 {
			out.Body, out.ContentLength, out.GetBody = http.NoBody, 0, nil
			return
		}
		f, off, size := b.file, b.off, b.size
		open := func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(f, off, size)), nil
		}
		out.Body, _ = open()
		out.ContentLength, out.GetBody = size, open
	default:
		out.Body = b.once.handle()
	}
}

// rewind says whether another attempt can have the whole body, after an attempt that ended
// with outcome: for a GetBody body, whether GetBody gave the next one.
func (b *bodySource) rewind(outcome Outcome) bool {
	switch {
	case b.getBody != nil:
		next, err := b.getBody()
		if err != nil || next == nil {
			return false // the caller gets this attempt's answer
		}
		b.next = next
		return true
	case b.once != nil:
		return outcome == OutcomeConnectFailed && b.once.untouched()
	}
	return true
}

// close closes the request's body unless the base transport has it (RoundTrip's contract: the
// body is closed, whatever happens).
func (b *bodySource) close() {
	b.closedOnce.Do(func() {
		if b.orig != nil && !b.sentOrig {
			b.orig.Close()
		}
		if b.next != nil { // got for an attempt that never came
			b.next.Close()
		}
	})
}

// oneShot is a body that reads once. Each attempt reads it through its own handle; a new
// handle is given out only while nothing was read, and retires the earlier ones.
type oneShot struct {
	mu      sync.Mutex // held during each Read
	r       io.Reader
	gen     int  // the current handle's generation
	touched bool // a handle's Read ran
}

var errStaleBody = errors.New("easdirect: this attempt's request body was handed to a later attempt")

type oneShotHandle struct {
	s   *oneShot
	gen int
}

func (s *oneShot) handle() io.ReadCloser {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	return &oneShotHandle{s: s, gen: s.gen}
}

// untouched reports whether no handle has read anything, and then retires the current one. A
// Read in progress (the mutex is held) counts as touched, without waiting for it.
func (s *oneShot) untouched() bool {
	if !s.mu.TryLock() {
		return false
	}
	defer s.mu.Unlock()
	if s.touched {
		return false
	}
	s.gen++ // the earlier handles read nothing from now on
	return true
}

func (h *oneShotHandle) Read(p []byte) (int, error) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if h.gen != h.s.gen {
		return 0, errStaleBody
	}
	h.s.touched = true
	return h.s.r.Read(p)
}

// Close does nothing: the request's body is closed once, by bodySource.close.
func (h *oneShotHandle) Close() error { return nil }
