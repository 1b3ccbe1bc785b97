package policy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/lab/netns"
)

// A tiered Drop judges new connections only (core/tiers/README.md,
// "Existing connections"): on a real node, a TCP connection web -> db
// opened before the Drop keeps flowing both ways after it, for as long as
// it lasts, while a new connection from web times out; once the Drop goes,
// new connections pass again.
func TestTieredDropLeavesEstablishedConnections(t *testing.T) {
	n := agenttest.Start(t)
	ctx := context.Background()
	db := addPod(t, n, "db-0")
	web := addPod(t, n, "web-0")
	// An echo server in db on TCP 7000.
	var ln net.Listener
	if err := netns.Do(db.netns, func() (err error) {
		ln, err = net.Listen("tcp", db.ip.String()+":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	dial := func(timeout time.Duration) (c net.Conn, err error) {
		err = netns.Do(web.netns, func() (err error) {
			c, err = net.DialTimeout("tcp", db.ip.String()+":7000", timeout)
			return err
		})
		return c, err
	}
	conn, err := dial(5 * time.Second)
	if err != nil {
		t.Fatalf("web -> db tcp/7000 before any policy: %v", err)
	}
	defer conn.Close()
	echo := func(msg string) error {
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echoed %q, want %q", buf, msg)
		}
		return nil
	}
	if err := echo("before"); err != nil {
		t.Fatal(err)
	}

	tp, prio := int32(100), 1.0
	drop := controlplane.RuleActionDrop
	s := policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": {ObjectMeta: metav1.ObjectMeta{Name: "db"}, Members: []controlplane.GroupMember{member(db)}}},
		AddressGroups:   map[string]*controlplane.AddressGroup{"web": {ObjectMeta: metav1.ObjectMeta{Name: "web"}, Members: []controlplane.GroupMember{member(web)}}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"sec": {
			ObjectMeta:      metav1.ObjectMeta{Name: "sec", UID: types.UID("uid-sec"), Generation: 1},
			AppliedToGroups: []string{"db"}, TierPriority: &tp, Priority: &prio, Tier: "securityops",
			Rules: []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn,
				From:     controlplane.NetworkPolicyPeer{AddressGroups: []string{"web"}},
				Services: []controlplane.Service{svc(controlplane.ProtocolTCP, 7000)}, Action: &drop}},
		}},
	}
	if err := n.Agent.Policy().Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(1500 * time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a new connection web -> db tcp/7000 passed the Drop")
	}
	// The connection opened before keeps flowing, both ways, for seconds.
	for i := range 10 {
		if err := echo(fmt.Sprintf("after %d", i)); err != nil {
			t.Fatalf("the established connection after the Drop, exchange %d: %v", i, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := n.Agent.Policy().Sync(ctx, policy.State{}); err != nil {
		t.Fatal(err)
	}
	c, err := dial(5 * time.Second)
	if err != nil {
		t.Fatalf("a new connection after the Drop went: %v", err)
	}
	c.Close()
}
