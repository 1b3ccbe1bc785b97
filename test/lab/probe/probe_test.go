package probe

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// freePort returns a port that is free for TCP and UDP on loopback right now.
func freePort(t *testing.T) int32 {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", itoa(port)))
		if err != nil {
			continue
		}
		_ = pc.Close()
		return int32(port)
	}
	t.Fatal("no free port")
	return 0
}

func itoa(i int) string { return (&net.TCPAddr{Port: i}).String()[1:] }

func TestServeAndProbeLoopback(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	closed := freePort(t)
	stop, err := Serve(ctx, "", "pod-a", []corev1.ContainerPort{
		{ContainerPort: port}, // protocol defaults to TCP
		{ContainerPort: port, Protocol: corev1.ProtocolUDP},
		{ContainerPort: port, Protocol: corev1.ProtocolTCP}, // duplicate: ignored
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	addr := net.JoinHostPort("127.0.0.1", itoa(int(port)))
	for _, proto := range []string{"tcp", "UDP"} {
		got, err := Probe(ctx, "", proto, addr, 2*time.Second)
		if err != nil || got != "pod-a" {
			t.Errorf("Probe %s %s = %q, %v; want pod-a", proto, addr, got, err)
		}
	}

	closedAddr := net.JoinHostPort("127.0.0.1", itoa(int(closed)))
	for _, proto := range []string{"tcp", "udp"} {
		_, err := Probe(ctx, "", proto, closedAddr, 2*time.Second)
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Probe %s to a closed port: %v, want ErrRefused", proto, err)
		}
	}

	stop()
	stop() // idempotent
	if _, err := Probe(ctx, "", "tcp", addr, 2*time.Second); !errors.Is(err, ErrRefused) {
		t.Errorf("Probe after stop: %v, want ErrRefused", err)
	}
}

func TestServeReportsFailedPortsAndServesTheRest(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = busy.Close() })
	busyPort := int32(busy.Addr().(*net.TCPAddr).Port)

	stop, err := Serve(ctx, "", "pod-b", []corev1.ContainerPort{
		{ContainerPort: busyPort},
		{ContainerPort: port},
		{ContainerPort: 1, Protocol: "ICMP"},
	})
	t.Cleanup(stop)
	if err == nil {
		t.Fatal("Serve reported no error for a busy port and an unknown protocol")
	}
	got, perr := Probe(ctx, "", "tcp", net.JoinHostPort("127.0.0.1", itoa(int(port))), 2*time.Second)
	if perr != nil || got != "pod-b" {
		t.Errorf("the healthy port: %q, %v", got, perr)
	}
}

func TestServeSCTP(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	stop, err := Serve(ctx, "", "pod-s", []corev1.ContainerPort{{ContainerPort: port, Protocol: corev1.ProtocolSCTP}})
	t.Cleanup(stop)
	addr := net.JoinHostPort("127.0.0.1", itoa(int(port)))
	if err != nil {
		if !errors.Is(err, ErrSCTPUnsupported) {
			t.Fatalf("Serve SCTP failed with %v, not ErrSCTPUnsupported", err)
		}
		if _, err := Probe(ctx, "", "sctp", addr, time.Second); !errors.Is(err, ErrSCTPUnsupported) {
			t.Fatalf("Probe SCTP on a kernel without SCTP: %v", err)
		}
		t.Logf("kernel has no SCTP; checked ErrSCTPUnsupported only: %v", err)
		return
	}
	got, err := Probe(ctx, "", "sctp", addr, 2*time.Second)
	if err != nil || got != "pod-s" {
		t.Fatalf("Probe sctp = %q, %v", got, err)
	}
}

func TestProbeBadArguments(t *testing.T) {
	_, err := Probe(context.Background(), "", "icmp", "127.0.0.1:1", time.Second)
	if err == nil || errors.Is(err, ErrTimeout) || errors.Is(err, ErrRefused) {
		t.Fatalf("unknown protocol: %v", err)
	}
}

// A probe whose context's deadline passed before it could send anything (a
// starved machine) did not see a drop.
func TestProbePastDeadlineIsNotTimeout(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	_, err := Probe(ctx, "", "udp", "127.0.0.1:9", time.Second)
	if err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("probe past its context's deadline: %v, want a plain error", err)
	}
}

func TestProbeCancelledIsNotTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Probe(ctx, "", "tcp", "127.0.0.1:1", time.Second)
	if err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("cancelled probe: %v, want a plain error", err)
	}
}
