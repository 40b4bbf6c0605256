//go:build linux && amd64 && !easdirect_pkgconfig && !easdirect_static

package easdirect

// The default: links the prebuilt static archive that the module carries, lib/linux_amd64/
// libeasdirect.a with include/easdirect.h (the way wasmtime-go ships its libraries), so a
// consumer needs only Go and a C compiler: no pkg-config, no library path, no Rust. A release's
// module zip (dist.sh) carries both files; in a checkout they are not committed: run
// `go generate` here (bundle.sh copies them from the repository's make build) or build with
// -tags easdirect_pkgconfig.

//go:generate bash bundle.sh

// #cgo CFLAGS: -I${SRCDIR}/include
// #cgo LDFLAGS: ${SRCDIR}/lib/linux_amd64/libeasdirect.a -lpthread -ldl -lm
import "C"
