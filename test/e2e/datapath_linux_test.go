package e2e

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/probe"
)

// TestDatapath: the pod MTU leaves room for the tunnel (the largest
// unfragmented ping across nodes passes, one byte more is refused with
// EMSGSIZE rather than lost); pod -> external host is SNATed to the node
// IP; the node reaches its own and other nodes' pods.
func TestDatapath(t *testing.T) {
	e := upLab(t, "encap", "geneve")
	pods := e.deploy("web", 3)
	checkSpread(t, pods)
	byNode := map[string]corev1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = p
	}
	src, dst := byNode["node-1"], byNode["node-2"]

	t.Run("MTU", func(t *testing.T) {
		const podMTU = 1500 - 50 // the lab's fabric MTU minus Geneve's overhead
		link, err := inNS(e.ctx, e.podNS(&src), "ip", "-o", "link", "show", "dev", "eth0")
		if err != nil || !strings.Contains(link, "mtu 1450 ") {
			t.Fatalf("pod eth0: %v: %s", err, link)
		}
		p, err := newPinger(e.podNS(&src))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		to := netip.MustParseAddr(dst.Status.PodIP)
		largest := podMTU - 20 - 8 // IPv4 and ICMP headers
		if err := p.ping(e.ctx, to, largest, 2*time.Second); err != nil {
			t.Errorf("ping across nodes with %d bytes (a %d-byte packet, DF): %v", largest, podMTU, err)
		}
		err = p.ping(e.ctx, to, largest+1, 2*time.Second)
		if !errors.Is(err, syscall.EMSGSIZE) {
			t.Errorf("ping with %d bytes: %v, want EMSGSIZE (message too long)", largest+1, err)
		} else {
			t.Logf("%d-byte payload crosses nodes unfragmented; %d is refused: %v", largest, largest+1, err)
		}
	})

	t.Run("SNAT to the external host", func(t *testing.T) {
		extNS := e.c.NetNSPath("ext")
		var ln net.Listener
		if err := ns.WithNetNSPath(extNS, func(ns.NetNS) error {
			var err error
			ln, err = net.Listen("tcp", net.JoinHostPort(e.c.ExternalIP(), "9000"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		seen := make(chan string, 3)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
				c.Close()
			}
		}()
		nodeIP := map[string]string{}
		for _, n := range e.c.NodeList() {
			nodeIP[n.Name] = n.IP
		}
		for _, p := range pods {
			err := ns.WithNetNSPath(e.podNS(&p), func(ns.NetNS) error {
				ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
				defer cancel()
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(e.c.ExternalIP(), "9000"))
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				t.Errorf("%s (%s) -> external host: %v", p.Name, p.Spec.NodeName, err)
				continue
			}
			select {
			case from := <-seen:
				if from != nodeIP[p.Spec.NodeName] {
					t.Errorf("%s (%s, %s) reached the external host from %s, want its node IP %s", p.Name, p.Spec.NodeName, p.Status.PodIP, from, nodeIP[p.Spec.NodeName])
				} else {
					t.Logf("%s (%s) -> external host seen from %s", p.Status.PodIP, p.Spec.NodeName, from)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s: the external host saw no connection", p.Name)
			}
		}
	})

	t.Run("SNAT back after its chain is flushed", func(t *testing.T) {
		// Someone flushes Seine's NAT chain (iptables -t nat -F): the
		// agent's periodic resync of the host rules puts it back, so new
		// connections to the external host are SNATed again within the
		// resync period (the lab configures lab.AgentHostRulesResync).
		p := byNode["node-1"]
		var nodeIP string
		for _, n := range e.c.NodeList() {
			if n.Name == p.Spec.NodeName {
				nodeIP = n.IP
			}
		}
		seen, stop := listenExternal(t, e, "9001")
		defer stop()
		if out, err := inNS(e.ctx, e.c.NetNSPath("node-1"), "iptables", "-t", "nat", "-F", "SEINE-POSTROUTING"); err != nil {
			t.Fatalf("flush SEINE-POSTROUTING: %v: %s", err, out)
		}
		flushed := time.Now()
		deadline := flushed.Add(lab.AgentHostRulesResync + 10*time.Second)
		for {
			err := dialExternal(e, &p, "9001")
			from := ""
			if err == nil {
				select {
				case from = <-seen:
				case <-time.After(5 * time.Second):
				}
			}
			if from == nodeIP {
				t.Logf("SNAT back %v after the flush (resync period %v)", time.Since(flushed).Round(100*time.Millisecond), lab.AgentHostRulesResync)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s -> external host still not SNATed %v after SEINE-POSTROUTING was flushed (last: seen from %q, %v)",
					p.Name, time.Since(flushed).Round(time.Second), from, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("one reply per echo to the external host", func(t *testing.T) {
		// The node kernel must not process uplink frames OVS already took
		// (it used to answer every echo a second time).
		ext := netip.MustParseAddr(e.c.ExternalIP())
		for _, p := range pods {
			pg, err := newPinger(e.podNS(&p))
			if err != nil {
				t.Fatal(err)
			}
			n, err := pg.repliesWithin(ext, time.Second)
			pg.Close()
			if err != nil || n != 1 {
				t.Errorf("%s (%s) -> external host: %d echo replies (%v), want exactly 1", p.Name, p.Spec.NodeName, n, err)
			}
		}
	})

	t.Run("CNI CHECK by the runtime", func(t *testing.T) {
		for _, p := range pods {
			if err := lab.Check(e.ctx, e.c, "default/"+p.Name); err != nil {
				t.Errorf("%s: %v", p.Name, err)
			}
		}
	})

	t.Run("node to pods", func(t *testing.T) {
		for _, node := range []string{"node-1", "node-2", "node-3"} {
			for _, p := range pods {
				reply, err := probe.Probe(e.ctx, e.c.NetNSPath(node), "tcp", p.Status.PodIP+":8080", 2*time.Second)
				if err != nil || reply != p.Name {
					t.Errorf("%s -> %s (%s): %q, %v", node, p.Name, p.Spec.NodeName, reply, err)
				}
			}
		}
	})
}

// listenExternal accepts TCP connections on the external host at port and
// sends the source address of each to the returned channel.
func listenExternal(t *testing.T, e *env, port string) (<-chan string, func()) {
	t.Helper()
	var ln net.Listener
	if err := ns.WithNetNSPath(e.c.NetNSPath("ext"), func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(e.c.ExternalIP(), port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case seen <- c.RemoteAddr().(*net.TCPAddr).IP.String():
			default:
			}
			c.Close()
		}
	}()
	return seen, func() { ln.Close() }
}

// dialExternal connects from the pod to the external host's port.
func dialExternal(e *env, p *corev1.Pod, port string) error {
	return ns.WithNetNSPath(e.podNS(p), func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
		defer cancel()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(e.c.ExternalIP(), port))
		if err == nil {
			c.Close()
		}
		return err
	})
}
