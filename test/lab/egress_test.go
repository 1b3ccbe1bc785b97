//go:build linux

package lab

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab/netns"
)

// TestEgressRoute: node addresses and names go to the node's namespace,
// pod IPs to the namespace of the node whose podCIDR holds them (a podCIDR
// allocated after the first look is found), anything else to the
// machine's namespace.
func TestEgressRoute(t *testing.T) {
	c := &Config{Nodes: 2, NSPrefix: "t-"}
	c.Defaults()
	node := func(name, cidr string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}
	}
	cs := fake.NewClientset(node("node-1", "10.244.1.0/24"))
	r := newEgressRoute(c, cs)
	ctx := context.Background()
	for host, want := range map[string]string{
		"172.30.0.11":    "/run/netns/t-node-1",
		"node-2":         "/run/netns/t-node-2",
		"10.244.1.7":     "/run/netns/t-node-1",
		"198.18.64.59":   "",
		"10.244.2.9":     "",
		"not-an-address": "",
	} {
		if got := r.netNS(ctx, host); got != want {
			t.Errorf("netNS(%s) = %q, want %q", host, got, want)
		}
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node("node-2", "10.244.2.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.listed = time.Time{} // as if a second had passed
	if got := r.netNS(ctx, "10.244.2.9"); got != "/run/netns/t-node-2" {
		t.Errorf("a podCIDR allocated later: netNS = %q", got)
	}
}

// TestEgressProxyTunnels runs the egress proxy on a unix socket, as
// kube-apiserver uses it: CONNECT to an address served only inside a
// network namespace reaches that server (bytes sent right behind the
// request included, and both directions closed cleanly); CONNECT to a
// closed port answers 502; any other method 405.
func TestEgressProxyTunnels(t *testing.T) {
	ci.RequireRoot(t, "creating a network namespace")
	nsPath := filepath.Join(t.TempDir(), "ns")
	if err := netns.Create(nsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(nsPath) })
	// An echo server on 127.0.0.1 inside the namespace: the machine's
	// loopback has no such listener, so only a dial from inside reaches it.
	var ln net.Listener
	if err := netns.Do(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				b, _ := io.ReadAll(conn)
				conn.Write([]byte("echo:" + string(b)))
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(t.TempDir(), "egress.sock")
	served := make(chan error, 1)
	go func() {
		served <- ServeEgress(ctx, slog.New(slog.DiscardHandler), sock, func(_ context.Context, host string) string { return nsPath })
	}()
	var conn net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; {
		var err error
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	target := ln.Addr().String()
	// The request and the first bytes of the tunnel in one write.
	if _, err := io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nhello"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s", target, resp.Status)
	}
	io.WriteString(conn, " world")
	conn.(*net.UnixConn).CloseWrite()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "echo:hello world" {
		t.Errorf("through the tunnel: %q, %v", got, err)
	}
	conn.Close()

	status := func(req string) string {
		t.Helper()
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, req)
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line)
	}
	// Port 1 on the namespace's loopback: nothing listens.
	if got := status("CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"); !strings.Contains(got, "502") {
		t.Errorf("CONNECT to a closed port: %q, want 502", got)
	}
	if got := status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.Contains(got, "405") {
		t.Errorf("GET: %q, want 405", got)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("ServeEgress: %v", err)
	}
}
