package probe

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab/netns"
)

// twoNamespaces makes a and b joined by a veth pair: a has 10.99.0.1/24, b 10.99.0.2/24.
func twoNamespaces(t *testing.T) (a, b string) {
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
	ip := func(ns string, args ...string) {
		t.Helper()
		var out []byte
		err := netns.Do(ns, func() (err error) {
			out, err = exec.Command(ipPath, args...).CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("in %s: ip %s: %v: %s", ns, strings.Join(args, " "), err, out)
		}
	}
	ip(a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", b)
	ip(a, "addr", "add", "10.99.0.1/24", "dev", "veth-a")
	ip(b, "addr", "add", "10.99.0.2/24", "dev", "veth-b")
	ip(a, "link", "set", "veth-a", "up")
	ip(b, "link", "set", "veth-b", "up")
	return a, b
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
		// Nobody holds 10.99.0.3: ARP goes unanswered, the packets are never sent.
		{"tcp", "10.99.0.3:8080", "", ErrTimeout},
		{"udp", "10.99.0.3:5353", "", ErrTimeout},
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
