package easdirect

// #include <easdirect.h>
import "C"

import (
	"bytes"
	"sync"
	"sync/atomic"
	"unsafe"
)

// nameCache maps instance ids to the Go strings of their ip and host, so that a pick allocates
// nothing: the strings of an instance are built once, not on every Select. An id is a hash of
// the host and stays the same across refreshes, so an entry never goes stale; the table is
// rebuilt from the current list when an unknown id shows up (once per list change), which also
// drops instances that left.
type nameCache struct {
	t  atomic.Pointer[nameTable]
	mu sync.Mutex // serialises rebuilds
}

type names struct{ ip, host string }

// nameTable is an immutable open-addressing table keyed by id (ids are already FNV hashes and
// never 0), at most half full: a lookup is a probe or two, cheaper than a Go map.
type nameTable struct {
	mask  uint64
	slots []nameSlot
}

type nameSlot struct {
	id uint64 // 0: empty
	n  names
}

func newNameTable(n int) *nameTable {
	size := 8
	for size < 2*n {
		size *= 2
	}
	return &nameTable{mask: uint64(size - 1), slots: make([]nameSlot, size)}
}

func (t *nameTable) get(id uint64) (names, bool) {
	for i := id & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.id == id {
			return s.n, true
		}
		if s.id == 0 {
			return names{}, false
		}
	}
}

// put adds id unless present; the table must have room (built for the final count).
func (t *nameTable) put(id uint64, n names) {
	for i := id & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.id == id {
			return
		}
		if s.id == 0 {
			*s = nameSlot{id: id, n: n}
			return
		}
	}
}

// cBytes is the NUL-terminated text in a fixed C char array, without copying.
func cBytes(p *C.char, n int) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(p)), n)
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func namesOf(in *C.eas_instance) names {
	return names{ip: string(cBytes(&in.ip[0], len(in.ip))), host: string(cBytes(&in.host[0], len(in.host)))}
}

// sameHost says whether in's host is h, so that an id collision cannot return another
// instance's address.
func sameHost(in *C.eas_instance, h string) bool {
	if len(h) >= len(in.host) || in.host[len(h)] != 0 {
		return false
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&in.host[0])), len(h))) == h
}

func makeInstance(in *C.eas_instance, n names) Instance {
	return Instance{ID: uint64(in.id), IP: n.ip, Port: uint16(in.port), Weight: uint32(in.weight), Host: n.host}
}

// cached finds in's strings.
func (nc *nameCache) cached(in *C.eas_instance) (names, bool) {
	if t := nc.t.Load(); t != nil {
		if n, ok := t.get(uint64(in.id)); ok && sameHost(in, n.host) {
			return n, true
		}
	}
	return names{}, false
}

// lookup converts in, with cached strings when there are some.
func (nc *nameCache) lookup(in *C.eas_instance) Instance {
	if n, ok := nc.cached(in); ok {
		return makeInstance(in, n)
	}
	return makeInstance(in, namesOf(in))
}

// instance converts a pick: on a miss it caches the whole current list of c, once per change.
func (nc *nameCache) instance(c *Client, in *C.eas_instance) Instance {
	if n, ok := nc.cached(in); ok {
		return makeInstance(in, n)
	}
	return nc.miss(c, in)
}

func (nc *nameCache) miss(c *Client, in *C.eas_instance) Instance {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if n, ok := nc.cached(in); ok { // another goroutine rebuilt it meanwhile
		return makeInstance(in, n)
	}
	n := namesOf(in)
	if t := nc.t.Load(); t != nil {
		if _, ok := t.get(uint64(in.id)); ok {
			return makeInstance(in, n) // an id collision: not worth a rebuild
		}
	}
	raw, err := c.rawInstances()
	if err != nil {
		raw = nil
	}
	nc.store(raw, in, n)
	return makeInstance(in, n)
}

// rebuild caches the strings of a full list (from a subscription callback).
func (nc *nameCache) rebuild(list []C.eas_instance) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.store(list, nil, names{})
}

// store publishes a table of list, plus extra (when not nil) with its names n. Holds nc.mu.
func (nc *nameCache) store(list []C.eas_instance, extra *C.eas_instance, n names) {
	old := nc.t.Load()
	t := newNameTable(len(list) + 1)
	if extra != nil {
		t.put(uint64(extra.id), n)
	}
	for i := range list {
		in := &list[i]
		if old != nil {
			if n, ok := old.get(uint64(in.id)); ok && sameHost(in, n.host) {
				t.put(uint64(in.id), n)
				continue
			}
		}
		t.put(uint64(in.id), namesOf(in))
	}
	nc.t.Store(t)
}
