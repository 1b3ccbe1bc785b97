package flowexport

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// Lines as OVS 3.1.0's userspace datapath prints them (dpctl/dump-conntrack
// -m -s), read on this machine, and as the kernel datapath prints them with
// nf_conntrack_acct=1 (counters in each tuple).
const ovsUserspaceDump = `tcp,orig=(src=10.9.0.1,dst=10.9.0.2,sport=40266,dport=5002),reply=(src=10.9.0.2,dst=10.9.0.1,sport=5002,dport=40266),id=0,zone=65520,status=0,timeout=25,mark=5,labels=0xabc,protoinfo=(state_orig=TIME_WAIT,state_reply=TIME_WAIT,wscale_orig=10,wscale_reply=0,flags_orig=WINDOW_SCALE,flags_reply=0)
icmp,orig=(src=10.9.0.1,dst=10.9.0.2,id=20109,type=8,code=0),reply=(src=10.9.0.2,dst=10.9.0.1,id=20109,type=0,code=0),id=0,zone=65520,status=0,timeout=21,mark=5,labels=0xabc
tcp,orig=(src=10.9.0.1,dst=10.9.0.2,sport=38046,dport=5001),reply=(src=10.9.0.2,dst=10.9.0.1,sport=5001,dport=38046),id=0,zone=65520,status=0,timeout=24,mark=5,labels=0xabc,protoinfo=(state_orig=ESTABLISHED,state_reply=FIN_WAIT_2,wscale_orig=10,wscale_reply=10,flags_orig=WINDOW_SCALE,flags_reply=WINDOW_SCALE)
`

const kernelDump = `udp,orig=(src=fd00:10:244:1::5,dst=fd00:10:96::a,sport=53000,dport=53,packets=3,bytes=210),reply=(src=fd00:10:244:2::7,dst=fd00:10:244:1::5,sport=53,dport=53000,packets=2,bytes=300),zone=65520,timeout=29,mark=1,labels=0x112233445566778899aabbccddeeff00
`

func TestParseConntrack(t *testing.T) {
	conns, err := ParseConntrack(ovsUserspaceDump + "\n" + kernelDump)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 4 {
		t.Fatalf("got %d connections, want 4", len(conns))
	}
	c := conns[0]
	if c.Proto != ProtoTCP || c.Orig.Src != netip.MustParseAddr("10.9.0.1") || c.Orig.DstPort != 5002 ||
		c.Reply.SrcPort != 5002 || c.Zone != 65520 || c.Mark != 5 || c.Timeout != 25 || c.TCPState != "TIME_WAIT" {
		t.Errorf("tcp entry: %+v", c)
	}
	if c.Labels[15] != 0xbc || c.Labels[14] != 0x0a || c.Labels[0] != 0 {
		t.Errorf("labels 0xabc read as %x", c.Labels)
	}
	if c.Counted || !c.Ended() {
		t.Errorf("userspace entry: counted %v (OVS userspace conntrack has no counters), ended %v", c.Counted, c.Ended())
	}
	if ic := conns[1]; ic.Proto != ProtoICMP || ic.Orig.ICMPID != 20109 || ic.Orig.ICMPType != 8 || ic.Reply.ICMPType != 0 || ic.TCPState != "" {
		t.Errorf("icmp entry: %+v", ic)
	}
	if s := conns[2].TCPState; s != "FIN_WAIT_2" || conns[2].Ended() {
		t.Errorf("a half-closed connection: state %q, ended %v; want the further along FIN_WAIT_2, not ended", s, conns[2].Ended())
	}
	k := conns[3]
	if !k.Counted || k.OrigCnt != (Counters{3, 210}) || k.ReplyCnt != (Counters{2, 300}) || !k.Orig.Src.Is6() ||
		k.Reply.Src != netip.MustParseAddr("fd00:10:244:2::7") || k.Labels[0] != 0x11 || k.Labels[15] != 0 {
		t.Errorf("kernel entry: %+v", k)
	}
}

// TestTCPStates: OVS's userspace conntrack keeps a state per direction
// (pf's): the connection is over when both sides' FINs were acknowledged;
// a new connection's reply side starts CLOSED, which is not an end.
func TestTCPStates(t *testing.T) {
	for _, tc := range []struct {
		protoinfo, state string
		ended            bool
	}{
		{"(state_orig=SYN_SENT,state_reply=CLOSED)", "SYN_SENT", false},
		{"(state_orig=ESTABLISHED,state_reply=ESTABLISHED,wscale_orig=7)", "ESTABLISHED", false},
		{"(state_orig=FIN_WAIT_2,state_reply=ESTABLISHED)", "FIN_WAIT_2", false},
		{"(state_orig=FIN_WAIT_2,state_reply=FIN_WAIT_2,wscale_orig=10)", "TIME_WAIT", true},
		{"(state_orig=TIME_WAIT,state_reply=TIME_WAIT)", "TIME_WAIT", true},
		{"(state=ESTABLISHED)", "ESTABLISHED", false},
		{"(state=TIME_WAIT)", "TIME_WAIT", true},
		{"(state=CLOSE)", "CLOSE", true},
	} {
		line := "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1,dport=2),reply=(src=10.0.0.2,dst=10.0.0.1,sport=2,dport=1),protoinfo=" + tc.protoinfo
		c, err := ParseConntrack(line)
		if err != nil {
			t.Fatal(err)
		}
		if c[0].TCPState != tc.state || c[0].Ended() != tc.ended {
			t.Errorf("%s: state %q ended %v, want %q %v", tc.protoinfo, c[0].TCPState, c[0].Ended(), tc.state, tc.ended)
		}
	}
}

func TestParseConntrackRefuses(t *testing.T) {
	for name, line := range map[string]string{
		"no reply":        `tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1,dport=2),zone=1`,
		"bad address":     `tcp,orig=(src=10.0.0.999,dst=10.0.0.2,sport=1,dport=2),reply=(src=10.0.0.2,dst=10.0.0.1,sport=2,dport=1)`,
		"port overflow":   `tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=70000,dport=2),reply=(src=10.0.0.2,dst=10.0.0.1,sport=2,dport=1)`,
		"unbalanced":      `tcp,orig=(src=10.0.0.1,dst=10.0.0.2,reply=(src=10.0.0.2,dst=10.0.0.1)`,
		"unknown proto":   `quic,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1)`,
		"labels too long": `tcp,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1),labels=0x112233445566778899aabbccddeeff0011`,
		"zone":            `tcp,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1),zone=65536`,
		"no address":      `tcp,orig=(sport=1,dport=2),reply=(src=10.0.0.2,dst=10.0.0.1)`,
		"extra ')'":       `tcp,orig=(src=10.0.0.1,dst=10.0.0.2)),reply=(src=10.0.0.2,dst=10.0.0.1)`,
		"')' first":       `tcp,orig=)src=10.0.0.1,dst=10.0.0.2(,reply=(src=10.0.0.2,dst=10.0.0.1)`,
		"')' in a value":  `tcp,zone=1),orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1)`,
		"open at the end": `tcp,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1),protoinfo=(state=SYN_SENT`,
		"labels not hex":  `tcp,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1),labels=0xabg`,
		"odd labels":      `tcp,orig=(src=10.0.0.1,dst=10.0.0.2),reply=(src=10.0.0.2,dst=10.0.0.1),labels=0xg12`,
	} {
		good := strings.SplitN(ovsUserspaceDump, "\n", 2)[0]
		_, err := ParseConntrack(good + "\n" + line + "\n")
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%s: err %v, want an error naming line 2", name, err)
		}
	}
}

type fakeCaller struct {
	method string
	args   []string
	out    string
}

func (f *fakeCaller) Call(_ context.Context, method string, args ...string) (string, error) {
	f.method, f.args = method, args
	return f.out, nil
}

func TestConntrackSourceAsksForItsZone(t *testing.T) {
	f := &fakeCaller{out: ovsUserspaceDump}
	conns, err := ConntrackSource{Appctl: f, Zone: 65520}.Dump(context.Background())
	if err != nil || len(conns) != 3 {
		t.Fatalf("got %d conns, %v", len(conns), err)
	}
	if got := f.method + " " + strings.Join(f.args, " "); got != "dpctl/dump-conntrack -m -s zone=65520" {
		t.Errorf("called %q", got)
	}
	if _, err := (ConntrackSource{Appctl: f, Datapath: "netdev@ovs-netdev", Zone: 65521}).Dump(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.method + " " + strings.Join(f.args, " "); got != "dpctl/dump-conntrack -m -s netdev@ovs-netdev zone=65521" {
		t.Errorf("called %q", got)
	}
}

func TestObservationDomainID(t *testing.T) {
	if ObservationDomainID("node-1") == ObservationDomainID("node-2") || ObservationDomainID("node-1") != ObservationDomainID("node-1") {
		t.Error("observation domain IDs must be stable and distinct per node")
	}
}

// TestParseConntrackInParts: a long dump, parsed in parts at the same
// time, gives what one pass over it gives, in order, and a bad line is
// named by its number in the whole dump — the first bad one when there
// are several.
func TestParseConntrackInParts(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	lines := strings.Split(strings.TrimSpace(dumpText(5*parallelLines)), "\n")
	// Blank lines here and there, as a dump may end with one.
	for _, i := range []int{7, parallelLines, 3 * parallelLines} {
		lines[i] = "  "
	}
	text := strings.Join(lines, "\n") + "\n"
	want, err := parseLines(text, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseConntrack(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) != len(lines)-3 {
		t.Fatalf("%d connections, one pass %d, want %d", len(got), len(want), len(lines)-3)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("connection %d: %+v, one pass %+v", i, got[i], want[i])
		}
	}
	bad := func(nums ...int) string {
		l := slices.Clone(lines)
		for _, n := range nums {
			l[n-1] = "tcp,orig=(src=10.0.0.999)"
		}
		return strings.Join(l, "\n")
	}
	for _, nums := range [][]int{{1}, {2*parallelLines + 5}, {len(lines)}, {4*parallelLines + 1, 2*parallelLines + 2}} {
		first := slices.Min(nums)
		if _, err := ParseConntrack(bad(nums...)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("line %d ", first)) {
			t.Errorf("bad lines %v: err %v, want one naming line %d", nums, err, first)
		}
	}
}
