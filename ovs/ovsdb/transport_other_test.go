//go:build !windows

package ovsdb

import (
	"errors"
	"testing"
)

func TestPipeEndpointUnsupported(t *testing.T) {
	for _, s := range []string{`npipe:\\.\pipe\ovsdb`, `winpipe:\\.\pipe\ovsdb`} {
		if _, err := ParseEndpoint(s); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("ParseEndpoint(%q) = %v, want ErrUnsupported off Windows", s, err)
		}
	}
}

func TestOpenTransportIsDirect(t *testing.T) {
	ep := Endpoint{Scheme: "unix", Address: "/run/openvswitch/db.sock"}
	addr, stop, err := openTransport(ep, nil)
	if err != nil || addr != "unix:/run/openvswitch/db.sock" {
		t.Fatalf("openTransport(%v) = %q, %v; want the endpoint itself", ep, addr, err)
	}
	stop()
}
