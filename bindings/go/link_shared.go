//go:build !easdirect_static

package easdirect

// Links libeasdirect.so, found through pkg-config (easdirect.pc). See the package documentation
// for how to build against the repository's own target/release.

// #cgo pkg-config: easdirect
import "C"
