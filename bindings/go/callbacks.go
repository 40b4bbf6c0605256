package easdirect

// A file with //export may only declare things in its preamble (cgo copies it into two C files).

// #include <easdirect.h>
import "C"

import (
	"fmt"
	"runtime/cgo"
	"runtime/debug"
	"unsafe"
)

//export easdirectOnChange
func easdirectOnChange(userData unsafe.Pointer, instances *C.eas_instance, n C.size_t) {
	s := cgo.Handle(uintptr(userData)).Value().(*subscription)
	raw := unsafe.Slice(instances, int(n)) // valid only during this call: copied below
	s.names.rebuild(raw)
	list := make([]Instance, len(raw))
	for i := range raw {
		list[i] = s.names.lookup(&raw[i])
	}
	defer func() {
		// A panic must not unwind into the library's frames. Treat it as Go treats a panic in
		// any goroutine: the program dies, with the callback's stack in the message.
		if r := recover(); r != nil {
			stack := debug.Stack()
			go panic(fmt.Sprintf("easdirect: a Subscribe callback panicked: %v\n\n%s", r, stack))
			select {} // the panic above ends the program; never return into C meanwhile
		}
	}()
	s.fn(list)
}

//export easdirectOnEnd
func easdirectOnEnd(userData unsafe.Pointer) {
	cgo.Handle(uintptr(userData)).Delete()
	liveSubscriptions.Add(-1)
}

//export easdirectFetch
func easdirectFetch(userData unsafe.Pointer, builder *C.eas_source_builder) C.int32_t {
	// run recovers every panic: nothing unwinds into the library's frames.
	return C.int32_t(cgo.Handle(uintptr(userData)).Value().(*source).run(builder))
}

//export easdirectOnSourceEnd
func easdirectOnSourceEnd(userData unsafe.Pointer) {
	cgo.Handle(uintptr(userData)).Delete()
	liveSources.Add(-1)
}

//export easdirectLog
func easdirectLog(userData unsafe.Pointer, level C.int32_t, message *C.char) {
	// Only a bug here could panic: the line is lost, and nothing unwinds into the library.
	defer func() { _ = recover() }()
	cgo.Handle(uintptr(userData)).Value().(*logSink).enqueue(slogLevel(level), C.GoString(message))
}

//export easdirectOnLogEnd
func easdirectOnLogEnd(userData unsafe.Pointer) {
	h := cgo.Handle(uintptr(userData))
	h.Value().(*logSink).end()
	h.Delete()
}
