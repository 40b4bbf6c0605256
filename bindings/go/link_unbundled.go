//go:build !(linux && amd64) && !easdirect_pkgconfig && !easdirect_static

package easdirect

// The module carries a prebuilt libeasdirect for linux/amd64 only. Elsewhere, build libeasdirect
// (make install in the repository) and use it through pkg-config: -tags easdirect_pkgconfig
// (shared) or -tags easdirect_static (static).
var _ = no_prebuilt_libeasdirect_for_this_platform_build_with_tags_easdirect_pkgconfig
