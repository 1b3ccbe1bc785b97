package e2e

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestPingerTakesRepliesReadLate: a reply that arrived while the reader
// was not running is still read after the read's deadline (Go's read gives
// up without looking once its deadline has passed), so a stalled test
// process does not count it lost. No lab: two namespaces joined by a veth.
func TestPingerTakesRepliesReadLate(t *testing.T) {
	ci.RequireCommands(t, "ip")
	a, b := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	for _, args := range [][]string{
		{"ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b},
		{"nsenter", "--net=" + a, "ip", "addr", "add", "10.199.0.1/24", "dev", "va"},
		{"nsenter", "--net=" + b, "ip", "addr", "add", "10.199.0.2/24", "dev", "vb"},
		{"nsenter", "--net=" + a, "ip", "link", "set", "va", "up"},
		{"nsenter", "--net=" + b, "ip", "link", "set", "vb", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	p, err := newPinger(a)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dst := netip.MustParseAddr("10.199.0.2")
	if err := p.ping(t.Context(), dst, 56, echoTimeout); err != nil { // ARP resolved
		t.Fatal(err)
	}

	sent, err := p.send(dst, 100, 56)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the reader does not run; the reply waits
	if err := p.conn.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.conn.ReadFrom(make([]byte, 1500)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Go's read past its deadline: %v, want it to give up without reading (what the pinger works around)", err)
	}
	r, ok, _, err := p.next(time.Now().Add(-time.Second))
	if err != nil || !ok {
		t.Fatalf("read after the deadline: ok %v, %v; want the queued reply", ok, err)
	}
	body, isReply := p.echoReply(r, dst)
	if !isReply || body.Seq != 100 {
		t.Fatalf("read %+v from %s, want echo reply 100", r.m, r.from)
	}
	if r.at.After(time.Now()) || r.at.Before(sent.Add(-time.Second)) {
		t.Errorf("reply received at %s, request sent at %s", r.at, sent)
	}
	if _, ok, empty, err := p.next(time.Now().Add(-time.Second)); ok || err != nil || empty.IsZero() {
		t.Errorf("second read: ok %v, %v, empty at %v; want nothing queued", ok, err, empty)
	}
}
