// Package netns creates, enters and removes persistent network namespaces for the lab:
// the kubelet stand-in's pod sandboxes and the probes that run inside them.
//
// A namespace is made persistent by bind-mounting it onto a file, as `ip netns add` and
// container runtimes do; it lives until that mount is removed and nothing else (a socket,
// a process) refers to it. See README.md for the threading rules behind Do.
package netns

import "errors"

// ErrNotSupported is returned on systems without Linux network namespaces.
var ErrNotSupported = errors.New("network namespaces are not supported on this system")
