package hostport

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRuntimeConfig(t *testing.T) {
	// As containerd passes the upstream HostPort spec's three pods (one
	// each) and a pod with two mappings.
	raw := `[{"hostPort":54323,"containerPort":8080,"protocol":"tcp","hostIP":"127.0.0.1"},
		{"hostPort":54324,"containerPort":8080,"protocol":"UDP","hostIP":"172.30.0.11"},
		{"hostPort":8443,"containerPort":443,"protocol":"sctp","hostIP":""},
		{"hostPort":80,"containerPort":8080,"hostIP":"0.0.0.0"}]`
	ms, err := ParseRuntimeConfig([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	got := Encode(ms)
	want := "tcp/127.0.0.1:54323:8080,udp/172.30.0.11:54324:8080,sctp/*:8443:443,tcp/*:80:8080"
	if got != want {
		t.Errorf("parsed %s, want %s", got, want)
	}
	back, err := Decode(got)
	if err != nil || Encode(back) != want {
		t.Errorf("decode %q: %v %v", got, back, err)
	}
	if ms, err := ParseRuntimeConfig(nil); err != nil || ms != nil {
		t.Errorf("no mappings: %v %v", ms, err)
	}
	for _, bad := range []string{
		`[{"hostPort":0,"containerPort":80}]`,
		`[{"hostPort":70000,"containerPort":80}]`,
		`[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]`,
		`[{"hostPort":80,"containerPort":80,"hostIP":"::1"}]`,
		`[{"hostPort":80,"containerPort":80,"hostIP":"nope"}]`,
		`[{"hostPort":80,"containerPort":80},{"hostPort":80,"containerPort":81,"hostIP":"10.0.0.1"}]`,
		`{"hostPort":80}`,
	} {
		if ms, err := ParseRuntimeConfig([]byte(bad)); err == nil {
			t.Errorf("%s: parsed as %v, want an error", bad, ms)
		}
	}
	for _, bad := range []string{"tcp", "tcp/1.2.3.4:80", "icmp/*:80:80", "tcp/x:80:80", "tcp/*:0:80"} {
		if ms, err := Decode(bad); err == nil {
			t.Errorf("decode %q: %v, want an error", bad, ms)
		}
	}
}

func TestTableRefusesTakenPorts(t *testing.T) {
	lo, node := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("172.30.0.11")
	var tab Table
	// The upstream spec's three pods: same port, different hostIP or
	// protocol, all on one node.
	for _, c := range []struct {
		owner string
		m     Mapping
	}{
		{"c1/eth0", Mapping{TCP, lo, 54323, 8080}},
		{"c2/eth0", Mapping{TCP, node, 54323, 8080}},
		{"c3/eth0", Mapping{UDP, node, 54323, 8080}},
	} {
		if err := tab.Reserve(c.owner, "ns/"+c.owner[:2], []Mapping{c.m}); err != nil {
			t.Fatalf("%s %s: %v", c.owner, c.m, err)
		}
	}
	// Taken: the same address, or every address over one that is held.
	for _, m := range []Mapping{{TCP, node, 54323, 80}, {TCP, netip.Addr{}, 54323, 80}, {UDP, netip.Addr{}, 54323, 53}} {
		err := tab.Reserve("c4/eth0", "ns/web", []Mapping{m})
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "pod ns/c") {
			t.Errorf("%s: %v, want a conflict naming the pod that holds it", m, err)
		}
	}
	// The same owner again (a retried ADD) keeps its port.
	if err := tab.Reserve("c2/eth0", "ns/c2", []Mapping{{TCP, node, 54323, 8080}}); err != nil {
		t.Errorf("retried ADD: %v", err)
	}
	tab.Release("c2/eth0")
	tab.Release("c2/eth0")
	if err := tab.Reserve("c4/eth0", "ns/web", []Mapping{{TCP, node, 54323, 80}}); err != nil {
		t.Errorf("after release: %v", err)
	}
}
