package easdirect

// #include <easdirect.h>
import "C"

import "fmt"

// The ABI this package was compiled against (from easdirect.h).
const (
	abiMajor = C.EAS_ABI_MAJOR
	abiMinor = C.EAS_ABI_MINOR
)

// abiErr is set once, when the package loads, if the libeasdirect actually loaded (a shared
// library found at run time may differ from the header used at build time) is incompatible.
// New returns it, so that a program that only imports the package still starts.
var abiErr = checkABI(uint32(C.eas_abi_version()), C.GoString(C.eas_version()))

func checkABI(loaded uint32, version string) error {
	major, minor := loaded>>16, loaded&0xffff
	if major == abiMajor && minor >= abiMinor {
		return nil
	}
	return fmt.Errorf("%w: the loaded libeasdirect %s has ABI %d.%d, but this Go binding was built for ABI %d.%d "+
		"and needs major %d with minor >= %d; install a matching libeasdirect (or point PKG_CONFIG_PATH and "+
		"LD_LIBRARY_PATH at one) and rebuild",
		ErrABIMismatch, version, major, minor, abiMajor, abiMinor, abiMajor, abiMinor)
}

// Version is the version of the loaded libeasdirect, e.g. "0.1.0".
func Version() string { return C.GoString(C.eas_version()) }

// ABIVersion is the ABI version of the loaded libeasdirect: major<<16 | minor.
func ABIVersion() uint32 { return uint32(C.eas_abi_version()) }
