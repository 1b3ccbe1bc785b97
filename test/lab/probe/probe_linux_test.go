package probe

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab/netns"
)

// twoNamespaces makes a and b joined by a veth pair: a has 10.99.0.1/24, b 10.99.0.2/24.
func twoNamespaces(t *testing.T) (a, b string) {
	a, b, _ = twoNamespacesCmd(t)
	return a, b
}

// twoNamespacesCmd is twoNamespaces that also returns a runner of commands
// (ip, iptables) inside either namespace.
func twoNamespacesCmd(t *testing.T) (a, b string, run func(ns, cmd string, args ...string)) {
	t.Helper()
	ci.RequireRoot(t, "creating network namespaces (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	ci.RequireCommands(t, "ip")
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, b = filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := netns.Create(p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netns.Remove(p) })
	}
	// A child process inherits the namespace of the thread that starts it.
	run = func(ns, cmd string, args ...string) {
		t.Helper()
		var out []byte
		err := netns.Do(ns, func() (err error) {
			out, err = exec.Command(cmd, args...).CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("in %s: %s %s: %v: %s", ns, cmd, strings.Join(args, " "), err, out)
		}
	}
	ip := func(ns string, args ...string) {
		t.Helper()
		run(ns, ipPath, args...)
	}
	ip(a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", b)
	ip(a, "addr", "add", "10.99.0.1/24", "dev", "veth-a")
	ip(b, "addr", "add", "10.99.0.2/24", "dev", "veth-b")
	ip(a, "link", "set", "veth-a", "up")
	ip(b, "link", "set", "veth-b", "up")
	// Until the kernel's link watcher marks a new veth operationally up (it
	// may take up to a second), the device drops what it is given.
	for _, end := range []struct{ ns, link string }{{a, "veth-a"}, {b, "veth-b"}} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			var state netlink.LinkOperState
			err := netns.Do(end.ns, func() error {
				l, err := netlink.LinkByName(end.link)
				if err == nil {
					state = l.Attrs().OperState
				}
				return err
			})
			if err == nil && state == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s not up after 5s: %v, %v", end.link, end.ns, state, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return a, b, run
}

func TestProbeAcrossNamespaces(t *testing.T) {
	a, b := twoNamespaces(t)
	ctx := context.Background()
	stop, err := Serve(ctx, a, "pod-a", []corev1.ContainerPort{
		{ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		{ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
		{ContainerPort: 9999, Protocol: corev1.ProtocolSCTP},
	})
	t.Cleanup(stop)
	if err != nil && !errors.Is(err, ErrSCTPUnsupported) {
		t.Fatalf("Serve: %v", err)
	}

	for _, c := range []struct {
		proto, addr string
		want        string
		wantErr     error
	}{
		{"tcp", "10.99.0.1:8080", "pod-a", nil},
		{"udp", "10.99.0.1:5353", "pod-a", nil},
		{"tcp", "10.99.0.1:8081", "", ErrRefused},
		{"udp", "10.99.0.1:5354", "", ErrRefused},
		// Nobody holds 10.99.0.3: ARP goes unanswered, the packets never leave. That
		// is not a drop.
		{"tcp", "10.99.0.3:8080", "", ErrUnreachable},
		{"udp", "10.99.0.3:5353", "", ErrUnreachable},
	} {
		got, err := Probe(ctx, b, c.proto, c.addr, 600*time.Millisecond)
		if got != c.want || !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
			t.Errorf("Probe %s %s from b = %q, %v; want %q, %v", c.proto, c.addr, got, err, c.want, c.wantErr)
		}
	}

	// The listeners live in a only: from the caller's namespace 10.99.0.1 is unknown.
	if _, err := Probe(ctx, "", "tcp", "10.99.0.1:8080", 300*time.Millisecond); err == nil {
		t.Error("the listener in namespace a answered from the caller's namespace")
	}
}

// TestProbeTellsDropFromOtherSilence: only a packet that left and got no
// answer reads as a drop. An iptables DROP in the server's namespace is one;
// a listener that accepts and never answers, or a next hop that never
// answers ARP, are not, and neither is a probe started past its context's
// deadline or from a namespace that does not exist.
func TestProbeTellsDropFromOtherSilence(t *testing.T) {
	a, b, run := twoNamespacesCmd(t)
	ci.RequireCommands(t, "iptables")
	iptables, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stop, err := Serve(ctx, a, "pod-a", []corev1.ContainerPort{
		{ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		{ContainerPort: 8082, Protocol: corev1.ProtocolTCP},
		{ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
	})
	t.Cleanup(stop)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	run(a, iptables, "-w", "-A", "INPUT", "-p", "tcp", "--dport", "8082", "-j", "DROP")
	run(a, iptables, "-w", "-A", "INPUT", "-p", "udp", "--dport", "5353", "-j", "DROP")
	// A listener whose owner never accepts: the kernel completes the
	// handshake, nobody says anything.
	var hung net.Listener
	if err := netns.Do(a, func() (err error) { hung, err = net.Listen("tcp", "10.99.0.1:8083"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hung.Close() })

	for _, c := range []struct {
		proto, addr string
		want        error
	}{
		{"tcp", "10.99.0.1:8080", nil},
		{"tcp", "10.99.0.1:8082", ErrTimeout},
		{"udp", "10.99.0.1:5353", ErrTimeout},
		{"tcp", "10.99.0.1:8083", ErrNoReply},
	} {
		_, err := Probe(ctx, b, c.proto, c.addr, 600*time.Millisecond)
		if (c.want == nil) != (err == nil) || !errors.Is(err, c.want) {
			t.Errorf("Probe %s %s from b: %v, want %v", c.proto, c.addr, err, c.want)
		}
		if c.want != ErrTimeout && errors.Is(err, ErrTimeout) {
			t.Errorf("Probe %s %s from b reads as a drop: %v", c.proto, c.addr, err)
		}
		if c.want != ErrTimeout && Sent(err) != 0 {
			t.Errorf("Probe %s %s from b: Sent %d of an error that is no timeout: %v", c.proto, c.addr, Sent(err), err)
		}
		if c.want != ErrTimeout {
			continue
		}
		// What Sent says left is what the DROP rule dropped: exactly, for
		// UDP (only the probe sends); at least, for TCP (the kernel may
		// resend the SYN, the probe counts its connection request once).
		var rules []byte
		if err := netns.Do(a, func() (err error) {
			rules, err = exec.Command(iptables, "-w", "-L", "INPUT", "-v", "-x", "-n").CombinedOutput()
			return err
		}); err != nil {
			t.Fatalf("iptables -L: %v: %s", err, rules)
		}
		dropped := dropCount(t, string(rules), c.proto, c.addr)
		sent := Sent(err)
		if sent < 1 || (c.proto == "udp" && int64(sent) != dropped) || (c.proto == "tcp" && (sent != 1 || dropped < 1)) {
			t.Errorf("Probe %s %s from b: Sent %d, the DROP rule dropped %d packets", c.proto, c.addr, sent, dropped)
		}
	}

	past, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := Probe(past, b, "tcp", "10.99.0.1:8082", 600*time.Millisecond); err == nil || errors.Is(err, ErrTimeout) {
		t.Errorf("a probe started past its context's deadline: %v, want an error that is not ErrTimeout", err)
	}
	if _, err := Probe(ctx, filepath.Join(t.TempDir(), "gone"), "tcp", "10.99.0.1:8082", 600*time.Millisecond); err == nil || errors.Is(err, ErrTimeout) {
		t.Errorf("a probe from a namespace that does not exist: %v, want an error that is not ErrTimeout", err)
	}
}

// dropCount reads, from `iptables -L -v -x -n`, the packets the DROP rule for
// proto and addr's port dropped.
func dropCount(t *testing.T, rules, proto, addr string) int64 {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	for _, l := range strings.Split(rules, "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "DROP" && strings.Contains(l, proto+" dpt:"+port) {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatalf("iptables line %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no DROP rule for %s %s in:\n%s", proto, addr, rules)
	return 0
}
