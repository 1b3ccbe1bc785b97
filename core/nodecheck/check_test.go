package nodecheck

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConflist(t *testing.T) {
	const sock = "/var/run/seine/cni.sock"
	for _, tc := range []struct {
		name, conflist string
		others         map[string]string
		want           string // "" means valid
	}{
		{"valid", `{"cniVersion":"1.1.0","name":"seine","plugins":[{"type":"seine","socketPath":"/var/run/seine/cni.sock"}]}`, nil, ""},
		{"chained after seine", `{"cniVersion":"1.0.0","name":"seine","plugins":[{"type":"seine","socketPath":"/var/run/seine/cni.sock"},{"type":"portmap"}]}`, nil, ""},
		{"not json", `{"cniVersion":`, nil, "unexpected end"},
		{"no seine plugin", `{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"bridge"}]}`, nil, `has no "seine" plugin`},
		{"unsupported version", `{"cniVersion":"0.3.1","name":"seine","plugins":[{"type":"seine","socketPath":"/var/run/seine/cni.sock"}]}`, nil, "not supported by seine-cni"},
		{"ipam", `{"cniVersion":"1.1.0","name":"seine","plugins":[{"type":"seine","socketPath":"/var/run/seine/cni.sock","ipam":{"type":"host-local"}}]}`, nil, "allocates pod IPs"},
		{"default socket elsewhere", `{"cniVersion":"1.1.0","name":"seine","plugins":[{"type":"seine","socketPath":"/tmp/x.sock"}]}`, nil, "socketPath /tmp/x.sock, but the agent listens on " + sock},
		{"shadowed", `{"cniVersion":"1.1.0","name":"seine","plugins":[{"type":"seine","socketPath":"/var/run/seine/cni.sock"}]}`,
			map[string]string{"00-flannel.conf": `{"cniVersion":"1.0.0","name":"f","type":"flannel"}`}, "00-flannel.conf sorts first"},
		{"later ones do not matter", `{"cniVersion":"1.1.0","name":"seine","plugins":[{"type":"seine","socketPath":"/var/run/seine/cni.sock"}]}`,
			map[string]string{"99-loopback.conf": `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "10-seine.conflist")
			write(t, path, tc.conflist, 0o644)
			for name, c := range tc.others {
				write(t, filepath.Join(dir, name), c, 0o644)
			}
			detail, err := checkConflist(path, sock)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tc.want == "" && !strings.HasPrefix(detail, "network "):
				t.Errorf("detail %q", detail)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
