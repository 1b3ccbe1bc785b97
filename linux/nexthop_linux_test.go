package linux

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestNextHopMAC resolves next hops in a throwaway node namespace joined by
// a veth to a "peer" namespace: nothing before the host has talked to the
// peer, the peer's MAC once it has (directly, and as the router of a routed
// prefix), an unconfirmed entry reported as not fresh.
func TestNextHopMAC(t *testing.T) {
	requirePrivileges(t, "ping")
	node, peer := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	sh(t, node, "ip", "link", "add", "nh0", "type", "veth", "peer", "name", "nh1", "netns", peer)
	sh(t, node, "ip", "addr", "add", "10.9.0.1/24", "dev", "nh0")
	sh(t, node, "ip", "link", "set", "nh0", "up")
	sh(t, peer, "ip", "addr", "add", "10.9.0.2/24", "dev", "nh1")
	sh(t, peer, "ip", "link", "set", "nh1", "up")
	sh(t, node, "ip", "route", "add", "10.77.0.0/16", "via", "10.9.0.2")
	peerMAC := strings.Fields(sh(t, peer, "ip", "-br", "link", "show", "nh1"))[2]

	b := newBackend(t, node, nil, "", "")
	ctx := context.Background()
	if mac, _, err := b.NextHopMAC(ctx, ip("10.9.0.2")); !errors.Is(err, platform.ErrNoNeighbour) {
		t.Fatalf("before any traffic: got %v, %v; want ErrNoNeighbour", mac, err)
	}
	sh(t, node, "ping", "-c1", "-W2", "10.9.0.2")
	for _, dst := range []string{"10.9.0.2", "10.77.3.4"} {
		mac, fresh, err := b.NextHopMAC(ctx, ip(dst))
		if err != nil || mac.String() != peerMAC || !fresh {
			t.Errorf("next hop of %s: %v fresh=%v err=%v; want %s, fresh", dst, mac, fresh, err, peerMAC)
		}
	}
	sh(t, node, "ip", "neigh", "replace", "10.9.0.2", "lladdr", "02:00:00:00:00:99", "nud", "stale", "dev", "nh0")
	mac, fresh, err := b.NextHopMAC(ctx, ip("10.77.3.4"))
	if err != nil || mac.String() != "02:00:00:00:00:99" || fresh {
		t.Errorf("stale entry: %v fresh=%v err=%v; want 02:00:00:00:00:99, not fresh", mac, fresh, err)
	}
	if _, _, err := b.NextHopMAC(ctx, ip("192.0.2.1")); err == nil {
		t.Error("next hop without a route: no error")
	}
}
