//go:build easdirect_pkgconfig && !easdirect_static

package easdirect

// With -tags easdirect_pkgconfig: links libeasdirect.so, found through pkg-config (easdirect.pc).
// See the package documentation for how to build against the repository's own target/release.

// #cgo pkg-config: easdirect
import "C"
