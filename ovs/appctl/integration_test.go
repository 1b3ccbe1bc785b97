package appctl

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestAgainstOVS runs each command natively and through ovs-appctl against a
// private OVS and requires identical text.
func TestAgainstOVS(t *testing.T) {
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	must(d.Vsctl(ctx, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"))
	must(d.Ofctl(ctx, "add-flow", "br0", "table=0,priority=10,udp,actions=ct(commit,zone=5),resubmit(,1)"))
	must(d.Ofctl(ctx, "add-flow", "br0", "table=1,priority=0,actions=drop"))
	// A packet-out through ct(commit) leaves a userspace conntrack entry.
	pkt := hex.EncodeToString(udpPacket([4]byte{10, 1, 1, 1}, [4]byte{10, 1, 1, 2}, 4242, 53))
	must(d.Ofctl(ctx, "packet-out", "br0", "in_port=LOCAL packet="+pkt+" actions=ct(commit,zone=5)"))

	path, err := CtlPath(d.RunDir(), "ovs-vswitchd")
	if err != nil || path != d.VswitchdCtlPath() {
		t.Fatalf("CtlPath = %q, %v; want %q", path, err, d.VswitchdCtlPath())
	}
	c, err := DialTarget(ctx, d.RunDir(), "ovs-vswitchd")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	for _, tc := range []struct {
		name   string
		native func() (string, error)
		args   []string
		check  func(string) bool // an extra assertion on the text
	}{
		{"version", func() (string, error) { return c.Version(ctx) }, []string{"version"},
			func(s string) bool { return strings.HasPrefix(s, "ovs-vswitchd (Open vSwitch) ") }},
		{"dpif/show", func() (string, error) { return c.DpifShow(ctx) }, []string{"dpif/show"},
			func(s string) bool {
				return strings.Contains(s, "netdev@ovs-netdev") && strings.Contains(s, "br0 65534/")
			}},
		{"ofproto/trace", func() (string, error) {
			return c.OfprotoTrace(ctx, "br0", "in_port=LOCAL,udp,nw_src=10.1.1.1,nw_dst=10.1.1.2")
		}, []string{"ofproto/trace", "br0", "in_port=LOCAL,udp,nw_src=10.1.1.1,nw_dst=10.1.1.2"},
			func(s string) bool { return strings.Contains(s, "ct(commit,zone=5)") }},
		{"dump-conntrack zone", func() (string, error) { return c.DumpConntrack(ctx, 5) }, []string{"dpctl/dump-conntrack", "zone=5"},
			func(s string) bool {
				return strings.Contains(s, "udp,orig=(src=10.1.1.1,dst=10.1.1.2,sport=4242,dport=53)") && strings.Contains(s, "zone=5")
			}},
		{"dump-conntrack other zone", func() (string, error) { return c.DumpConntrack(ctx, 6) }, []string{"dpctl/dump-conntrack", "zone=6"},
			func(s string) bool { return s == "" }},
		{"dump-conntrack all", func() (string, error) { return c.DumpConntrack(ctx, AllZones) }, []string{"dpctl/dump-conntrack"},
			func(s string) bool { return strings.Contains(s, "zone=5") }},
		{"tnl/arp/show", func() (string, error) { return c.TnlARPShow(ctx) }, []string{"tnl/arp/show"},
			func(s string) bool { return strings.Contains(s, "IP") && strings.Contains(s, "MAC") }},
		{"ovs/route/show", func() (string, error) { return c.OVSRouteShow(ctx) }, []string{"ovs/route/show"},
			func(s string) bool { return strings.Contains(s, "Route Table") }},
		{"vlog/set", func() (string, error) { return c.VlogSet(ctx, "dpif_netdev:file:dbg") }, []string{"vlog/set", "dpif_netdev:file:dbg"},
			func(s string) bool { return s == "" }},
		{"vlog/list", func() (string, error) { return c.Call(ctx, "vlog/list") }, []string{"vlog/list"},
			func(s string) bool { return regexp.MustCompile(`(?m)^dpif_netdev +\S+ +\S+ +DBG$`).MatchString(s) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.native()
			if err != nil {
				t.Fatal(err)
			}
			want, err := d.Appctl(ctx, "ovs-vswitchd", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("native:\n%s\novs-appctl:\n%s", got, want)
			}
			if !tc.check(got) {
				t.Errorf("unexpected output:\n%s", got)
			}
		})
	}

	// A refused command: *Error with the text ovs-appctl prints on stderr.
	_, err = c.Call(ctx, "no/such-command", "x")
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("unknown command: %v, want *Error", err)
	}
	_, cliErr := d.Appctl(ctx, "ovs-vswitchd", "no/such-command", "x")
	if cliErr == nil || !strings.Contains(cliErr.Error(), strings.TrimSpace(ae.Text)) {
		t.Errorf("native error %q not in ovs-appctl's %v", ae.Text, cliErr)
	}
	// The connection survives a refused command.
	if _, err := c.Version(ctx); err != nil {
		t.Errorf("call after an error: %v", err)
	}
	if out, err := c.FlushConntrack(ctx, 5); err != nil || out != "" {
		t.Errorf("FlushConntrack = %q, %v", out, err)
	}
	if out, err := c.DumpConntrack(ctx, 5); err != nil || out != "" {
		t.Errorf("conntrack after flush = %q, %v", out, err)
	}

	// ovsdb-server speaks the same protocol.
	dbc, err := DialTarget(ctx, d.RunDir(), "ovsdb-server")
	if err != nil {
		t.Fatal(err)
	}
	defer dbc.Close()
	got, err := dbc.Call(ctx, "ovsdb-server/list-dbs")
	want, err2 := d.Appctl(ctx, "ovsdb-server", "ovsdb-server/list-dbs")
	if err != nil || err2 != nil || got != want || !strings.Contains(got, "Open_vSwitch") {
		t.Errorf("ovsdb-server/list-dbs native %q (%v), ovs-appctl %q (%v)", got, err, want, err2)
	}
}

// udpPacket builds an Ethernet/IPv4/UDP frame with a valid IP checksum
// (userspace conntrack checks it) and no payload.
func udpPacket(src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, 14+20+8)
	copy(b[0:6], []byte{0x0a, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{0x0a, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 28)
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := b[34:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], 8)
	return b
}
