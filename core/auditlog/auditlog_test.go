package auditlog

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One line per connection, with every field in its place; a missing
// field is "-", and nothing in a field can break the line.
func TestLineFormat(t *testing.T) {
	e := Entry{
		Time:   time.Date(2026, 12, 7, 3, 10, 11, 123456789, time.FixedZone("CET", 3600)),
		Policy: "ClusterNetworkPolicy/tier-sec", Rule: "drop-a", Direction: "Ingress", Action: "Drop", Protocol: 6,
		Src: netip.MustParseAddrPort("10.244.1.5:40000"), Dst: netip.MustParseAddrPort("10.244.2.7:8080"),
		SrcPod: "default/a-0", DstPod: "default/server-0",
	}
	want := "2026-12-07T02:10:11.123456Z ClusterNetworkPolicy/tier-sec drop-a Ingress Drop TCP 10.244.1.5:40000 10.244.2.7:8080 default/a-0 default/server-0\n"
	if got := e.Line(); got != want {
		t.Errorf("line:\n%q\nwant:\n%q", got, want)
	}
	e = Entry{Time: e.Time, Policy: "NetworkPolicy/x/a b", Direction: "Egress", Action: "Allow", Protocol: 1,
		Src: netip.MustParseAddrPort("10.244.1.5:0"), Dst: netip.MustParseAddrPort("8.8.8.8:0")}
	want = "2026-12-07T02:10:11.123456Z - - Egress Allow ICMP 10.244.1.5:0 8.8.8.8:0 - -\n"
	if got := e.Line(); got != want {
		t.Errorf("line:\n%q\nwant:\n%q", got, want)
	}
	if got := ProtocolName(47); got != "47" {
		t.Errorf("protocol 47: %s", got)
	}
}

func frame(proto uint8, src, dst netip.AddrPort, vlan bool) []byte {
	b := make([]byte, 12)
	if vlan {
		b = append(b, 0x81, 0x00, 0, 5)
	}
	b = append(b, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0], ip[9] = 0x45, proto
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	l4 := make([]byte, 8)
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	return append(append(b, ip...), l4...)
}

func TestParseFrame(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.244.1.5:40000"), netip.MustParseAddrPort("10.244.2.7:8080")
	for _, vlan := range []bool{false, true} {
		p, s, d, err := ParseFrame(frame(17, src, dst, vlan))
		if err != nil || p != 17 || s != src || d != dst {
			t.Errorf("vlan %v: %d %s %s %v", vlan, p, s, d, err)
		}
	}
	// ICMP: no ports.
	p, s, d, err := ParseFrame(frame(1, src, dst, false))
	if err != nil || p != 1 || s.Port() != 0 || d.Port() != 0 || s.Addr() != src.Addr() {
		t.Errorf("icmp: %d %s %s %v", p, s, d, err)
	}
	// A later fragment: no ports.
	f := frame(6, src, dst, false)
	binary.BigEndian.PutUint16(f[14+6:], 100)
	if _, s, _, err := ParseFrame(f); err != nil || s.Port() != 0 {
		t.Errorf("later fragment: %s %v", s, err)
	}
	for name, b := range map[string][]byte{
		"short": {1, 2, 3},
		"arp":   append(make([]byte, 12), 0x08, 0x06, 0, 0),
		"ipv6":  append(append(make([]byte, 12), 0x08, 0x00), append([]byte{0x60}, make([]byte, 39)...)...),
	} {
		if _, _, _, err := ParseFrame(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// The same rule and 5-tuple within Repeat is one connection (one line);
// another source port is another connection; the file rotates by size and
// keeps MaxBackups old files, so the log stays under its cap; a full
// queue drops entries and counts them, never blocking.
func TestLoggerRepeatRotationAndBound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "networkpolicy", "np.log")
	l, err := New(Config{Path: path, MaxSizeMB: 1, MaxBackups: 2, Queue: 4, Repeat: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	e := Entry{Time: at, Policy: "ClusterNetworkPolicy/p", Rule: "r", Direction: "Ingress", Action: "Drop", Protocol: 6,
		Src: netip.MustParseAddrPort("10.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.0.0.2:80")}
	// Not running yet: the queue takes 4, the rest are dropped.
	for i := range 6 {
		e.Time = at.Add(time.Duration(i) * time.Second) // retransmissions
		if ok := l.Log(e); ok != (i < 4) {
			t.Fatalf("entry %d queued %v", i, ok)
		}
	}
	if l.Dropped() != 2 {
		t.Fatalf("dropped %d, want 2", l.Dropped())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	waitWritten := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for l.Written() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if l.Written() != n {
			t.Fatalf("written %d, want %d", l.Written(), n)
		}
	}
	waitWritten(1) // four retransmissions, one line
	// 3 MB of distinct connections: the file rotates, two old files stay.
	line := len(e.Line())
	n := 3*1024*1024/line + 1
	for i := range n {
		e.Time = at.Add(2 * time.Minute)
		e.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(i))
		for !l.Log(e) {
			time.Sleep(time.Microsecond)
		}
	}
	waitWritten(uint64(n) + 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// lumberjack removes old backups in a goroutine of its own.
	var files []os.DirEntry
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if files, err = os.ReadDir(filepath.Dir(path)); err != nil {
			t.Fatal(err)
		}
		if len(files) <= 3 || time.Now().After(deadline) {
			break
		}
	}
	var total int64
	for _, f := range files {
		fi, err := f.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 1024*1024 {
			t.Errorf("%s: %d bytes, over the 1 MB cap", f.Name(), fi.Size())
		}
		total += fi.Size()
	}
	if len(files) != 3 {
		t.Errorf("files %d, want the log and 2 backups", len(files))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), e.Line()) {
		t.Errorf("the last line is not the last entry")
	}
	t.Logf("%d lines of %d bytes: %d files, %d bytes in all", n+1, line, len(files), total)
	if len(l.seen) > repeatEntries {
		t.Errorf("remembers %d connections, more than %d", len(l.seen), repeatEntries)
	}
}
