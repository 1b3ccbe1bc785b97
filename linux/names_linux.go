package linux

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/seine-cni/seine/platform"
)

// maxIfNameLen is IFNAMSIZ minus the terminating NUL.
const maxIfNameLen = 15

// HostInterfaceName is the host-side veth name of a pod attachment: up to
// eight characters of the pod name, "-", and six hex digits of a hash of
// namespace, name, container ID and interface, so that it is deterministic
// (Detach finds it from a PodRef alone), readable in `ip link`, at most 15
// bytes, and distinct for two sandboxes of one pod that exist at once.
func HostInterfaceName(ref platform.PodRef) string {
	h := sha256.Sum256([]byte(ref.Namespace + "/" + ref.Name + "/" + ref.ContainerID + "/" + ref.IfName))
	suffix := hex.EncodeToString(h[:3])
	prefix := sanitizeIfName(ref.Name)
	if room := maxIfNameLen - 1 - len(suffix); len(prefix) > room {
		prefix = prefix[:room]
	}
	prefix = strings.TrimRight(prefix, "-.")
	if prefix == "" {
		prefix = "pod"
	}
	return prefix + "-" + suffix
}

// sanitizeIfName keeps the characters that are safe in an interface name
// everywhere it shows up (sysctl paths, iptables, OVS): ASCII letters,
// digits, '-' and '.'.
func sanitizeIfName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
