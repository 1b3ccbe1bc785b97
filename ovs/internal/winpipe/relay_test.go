package winpipe

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// echoDial returns a DialFunc whose connections echo every line back, and a
// counter of the connections it made.
func echoDial() (DialFunc, *atomic.Int32) {
	var n atomic.Int32
	return func(ctx context.Context) (net.Conn, error) {
		n.Add(1)
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			_, _ = io.Copy(b, b)
		}()
		return a, nil
	}, &n
}

func newRelay(t *testing.T, dial DialFunc) *Relay {
	t.Helper()
	r, err := NewRelay(dial, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dialRelay(t *testing.T, r *Relay) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := br.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo of %q: got %q, %v", line, got, err)
	}
}

func TestRelayJoinsEachConnection(t *testing.T) {
	dial, dials := echoDial()
	r := newRelay(t, dial)
	if host, _, _ := net.SplitHostPort(r.Addr()); host != "127.0.0.1" {
		t.Fatalf("relay listens on %s, want loopback", r.Addr())
	}
	a, b := dialRelay(t, r), dialRelay(t, r)
	ra, rb := bufio.NewReader(a), bufio.NewReader(b)
	roundTrip(t, a, ra, "first")
	roundTrip(t, b, rb, "second")
	roundTrip(t, a, ra, "third")
	if got := dials.Load(); got != 2 {
		t.Errorf("relay dialled %d times for 2 connections", got)
	}
}

func TestRelayCloseEndsConnections(t *testing.T) {
	dial, _ := echoDial()
	r := newRelay(t, dial)
	c := dialRelay(t, r)
	br := bufio.NewReader(c)
	roundTrip(t, c, br, "hello")
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("relayed connection still open after Close: read returned %v", err)
	}
	if c2, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second); err == nil {
		c2.Close()
		t.Fatal("relay still accepts after Close")
	}
}

func TestRelayDialFailureClosesClient(t *testing.T) {
	r := newRelay(t, func(ctx context.Context) (net.Conn, error) {
		return nil, errors.New("no pipe")
	})
	c := dialRelay(t, r)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read from a relay that cannot dial: %v, want EOF", err)
	}
}

func TestRelayBackendCloseClosesClient(t *testing.T) {
	r := newRelay(t, func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			// Answer once, then hang up, as a server that exits.
			buf := make([]byte, 5)
			if _, err := io.ReadFull(b, buf); err == nil {
				_, _ = b.Write(buf)
			}
			b.Close()
		}()
		return a, nil
	})
	c := dialRelay(t, r)
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := br.ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read after backend hung up: %v, want EOF", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isReset accepts a reset as the end of a connection: Windows reports a
// close with unread data that way.
func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}
