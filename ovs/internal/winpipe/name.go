// Package winpipe maps Open vSwitch's Windows endpoints to named pipes and
// relays a loopback TCP socket to one.
//
// OVS for Windows keeps the "unix:" syntax of its endpoints (db.sock, the
// <bridge>.mgmt OpenFlow socket, the <program>.ctl unixctl socket) but serves
// each of them as a named pipe (lib/stream-windows.c): a relative path is
// taken in OVS's rundir, every '/' and '\' is removed from the absolute path,
// and the result is prefixed with \\.\pipe\. So the database socket
// C:\openvswitch\var\run\openvswitch\db.sock is the pipe
// \\.\pipe\C:openvswitchvarrunopenvswitchdb.sock.
//
// The naming and the relay are plain Go, testable on any OS; Dial opens a pipe
// on Windows and returns an error wrapping errors.ErrUnsupported elsewhere, and
// so does OwnProcess, the relay's admission of this process's connections only
// (the owner of a loopback connection is read from Windows' TCP table).
package winpipe

import (
	"fmt"
	"strings"
)

// Prefix starts every local named pipe name.
const Prefix = `\\.\pipe\`

// DefaultRundir is OVS for Windows' default run directory, where it puts its
// sockets (as pipes) and pidfiles.
const DefaultRundir = `C:\openvswitch\var\run\openvswitch`

// NameForPath returns the pipe OVS for Windows serves for the socket path.
// A path without ':' (no drive) is relative to rundir, as in OVS; an empty
// rundir means DefaultRundir.
func NameForPath(rundir, path string) string {
	if !strings.Contains(path, ":") {
		if rundir == "" {
			rundir = DefaultRundir
		}
		path = rundir + `\` + path
	}
	return Prefix + strings.NewReplacer(`\`, "", "/", "").Replace(path)
}

// Name normalises a pipe name given as `\\.\pipe\x`, `//./pipe/x` or a bare
// `x` to the `\\.\pipe\x` form. Only local pipes are accepted: OVS denies
// network access to its pipes.
func Name(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty pipe name")
	}
	norm := strings.ReplaceAll(s, "/", `\`)
	switch {
	case strings.HasPrefix(strings.ToLower(norm), strings.ToLower(Prefix)):
		norm = Prefix + norm[len(Prefix):]
	case strings.HasPrefix(norm, `\\`):
		return "", fmt.Errorf("pipe %q: only local pipes (%s...) are supported", s, Prefix)
	default:
		norm = Prefix + strings.TrimLeft(norm, `\`)
	}
	if norm == Prefix {
		return "", fmt.Errorf("pipe %q: no name after %s", s, Prefix)
	}
	return norm, nil
}

// Resolve turns an endpoint in OVS syntax into a pipe name: "winpipe:<name>"
// and "npipe:<name>" name the pipe (see Name); "unix:<path>" is the socket
// path OVS for Windows serves as a pipe (see NameForPath, with the default
// rundir for relative paths). ok is false for any other scheme, such as
// "tcp:", which callers dial themselves.
func Resolve(endpoint string) (name string, ok bool, err error) {
	scheme, rest, found := strings.Cut(endpoint, ":")
	if !found {
		return "", false, nil
	}
	switch scheme {
	case "winpipe", "npipe":
		name, err := Name(rest)
		if err != nil {
			return "", true, fmt.Errorf("endpoint %q: %w", endpoint, err)
		}
		return name, true, nil
	case "unix":
		if rest == "" {
			return "", true, fmt.Errorf("endpoint %q: empty socket path", endpoint)
		}
		return NameForPath("", rest), true, nil
	}
	return "", false, nil
}
