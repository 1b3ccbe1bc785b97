package linux

import (
	"context"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// TestWatchHostRules: in a node netns, deleting one of Seine's routes and
// recreating the gateway (as a restarted ovs-vswitchd does with its
// internal ports) are reported; a Sync that adds Seine's routes and a
// change to someone else's route are not.
func TestWatchHostRules(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	node := rulesNode(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	state := platform.HostState{Gateway: "seine-gw0", PeerRoutes: []platform.PeerRoute{
		{PodCIDR: pfx("10.244.2.0/24"), NodeIP: ip("192.168.1.12")},
		{PodCIDR: pfx("10.244.3.0/24"), NodeIP: ip("192.168.2.13"), GatewayIP: ip("10.244.3.1")},
	}}
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	notes := make(chan struct{}, 100)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.WatchHostRules(wctx, func() { notes <- struct{}{} }) }()
	// expect waits for a notification (want) or for its absence.
	expect := func(step string, want bool) {
		t.Helper()
		wait := 300 * time.Millisecond
		if want {
			wait = 5 * time.Second
		}
		select {
		case <-notes:
			if !want {
				t.Errorf("%s: reported as a change", step)
			}
		case <-time.After(wait):
			if want {
				t.Errorf("%s: not reported", step)
			}
		}
		for len(notes) > 0 {
			<-notes
		}
	}
	// The subscription starts asynchronously: wait until a deletion is seen.
	deadline := time.Now().Add(5 * time.Second)
	for seen := false; !seen; {
		sh(t, node, "ip", "route", "del", "10.244.2.0/24")
		select {
		case <-notes:
			seen = true
		case <-time.After(200 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("deleting Seine's route was never reported")
			}
		}
		if err := b.Sync(ctx, state); err != nil {
			t.Fatal(err)
		}
	}
	// Earlier rounds of the loop may still have a notification on its way.
	time.Sleep(500 * time.Millisecond)
	for len(notes) > 0 {
		<-notes
	}
	expect("Sync re-adding the route", false)
	sh(t, node, "ip", "route", "replace", "10.50.0.0/16", "via", "192.168.1.2", "proto", "static")
	expect("someone else's route changed", false)
	sh(t, node, "ip", "route", "del", "10.244.3.0/24")
	expect("an onlink route through the gateway deleted", true)
	// The gateway recreated: its routes went with it, unannounced.
	sh(t, node, "ip", "link", "del", "seine-gw0")
	expect("gateway deleted", true)
	sh(t, node, "ip", "link", "add", "seine-gw0", "type", "veth", "peer", "name", "gw-peer")
	expect("gateway created", true)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchHostRules after its context ended: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchHostRules did not return after its context ended")
	}
}
