//go:build !linux

package ovsdaemon

import (
	"testing"
)

// NewNetNS skips: network namespaces exist only on Linux.
func NewNetNS(t testing.TB) string {
	t.Helper()
	t.Skipf("ovsdaemon: %v", errUnsupported)
	return ""
}

// CreateNetNS is not supported outside Linux.
func CreateNetNS(string) error { return errUnsupported }

// DeleteNetNS is not supported outside Linux.
func DeleteNetNS(string) error { return errUnsupported }

// NetNSPids is not supported outside Linux.
func NetNSPids(string) ([]int, error) { return nil, errUnsupported }

// IsMounted is not supported outside Linux.
func IsMounted(string) (bool, error) { return false, errUnsupported }
