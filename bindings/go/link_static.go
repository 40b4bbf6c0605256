//go:build easdirect_static

package easdirect

// With -tags easdirect_static: links libeasdirect.a into the binary (no shared library needed at
// run time), found through pkg-config (easdirect-static.pc, whose Libs name the archive and
// -lpthread -ldl -lm).

// #cgo pkg-config: easdirect-static
import "C"
