// Package flowexport reads the connections a node's Open vSwitch tracks,
// names their ends (pods, nodes, Services) and exports them as IPFIX records.
// It is platform-neutral: connections come from ovs-vswitchd's unixctl
// (dpctl/dump-conntrack), never from an OS API. See README.md.
package flowexport

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// IP protocol numbers the parser names.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// Tuple is one direction of a connection. ICMP connections have no ports:
// their identifier, type and code are kept instead.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	ICMPID           uint16
	ICMPType         uint8
	ICMPCode         uint8
}

// Counters are one direction's volumes, where the datapath counts them.
type Counters struct {
	Packets, Bytes uint64
}

// Conn is one conntrack entry as ovs-vswitchd reports it.
type Conn struct {
	Proto uint8
	// Orig is what the connection's first packet carried (for a Service:
	// the Service address, before DNAT); Reply is what answers carry (its
	// source is the endpoint after DNAT).
	Orig, Reply Tuple
	Zone        uint16
	Mark        uint32
	// Labels is ct_label, most significant byte first.
	Labels [16]byte
	// Timeout is what is left of the entry's timeout, in seconds. Every
	// packet re-arms it.
	Timeout uint32
	// TCPState is the TCP state (ESTABLISHED, TIME_WAIT, ...), empty for
	// other protocols.
	TCPState string
	// Counted is true when the datapath printed counters (the kernel
	// datapath with nf_conntrack_acct=1, Windows); OVS's userspace
	// conntrack has none.
	Counted           bool
	OrigCnt, ReplyCnt Counters
	// Start is when the datapath created the entry, if it says.
	Start time.Time
	// closed is set when the TCP connection is over (both sides closed,
	// or reset) though its entry is still in the table.
	closed bool
}

// Ended reports whether the connection is over though still in the table
// (TCP closed or waiting out TIME_WAIT).
func (c *Conn) Ended() bool { return c.closed }

// ParseConntrack parses the output of `ovs-appctl dpctl/dump-conntrack
// [-m] [-s]`, one entry per line. A line it cannot read is an error naming
// the line; keys it does not know are skipped (newer OVS releases add some).
// A long dump is parsed in parts, one per CPU, at the same time.
func ParseConntrack(text string) ([]Conn, error) {
	lines := strings.Count(text, "\n") + 1
	parts := min(runtime.GOMAXPROCS(0), lines/parallelLines)
	if parts < 2 {
		return parseLines(text, 1, make([]Conn, 0, lines))
	}
	// Cut at line ends, each part about as long as the others.
	type part struct {
		text         string
		first, lines int // its first line's number, its newlines
		conns        []Conn
		err          error
	}
	ps := make([]part, 0, parts)
	for first := 1; text != ""; {
		n := len(text)
		if len(ps) < parts-1 {
			n = len(text) / (parts - len(ps))
			if i := strings.IndexByte(text[n:], '\n'); i >= 0 {
				n += i + 1
			} else {
				n = len(text)
			}
		}
		p := part{text: text[:n], first: first, lines: strings.Count(text[:n], "\n")}
		ps = append(ps, p)
		first += p.lines
		text = text[n:]
	}
	var wg sync.WaitGroup
	for i := range ps {
		p := &ps[i]
		wg.Go(func() {
			p.conns, p.err = parseLines(p.text, p.first, make([]Conn, 0, p.lines+1))
		})
	}
	wg.Wait()
	total := 0
	for _, p := range ps {
		if p.err != nil { // the first part's error names the first bad line
			return nil, p.err
		}
		total += len(p.conns)
	}
	conns := make([]Conn, 0, total)
	for _, p := range ps {
		conns = append(conns, p.conns...)
	}
	return conns, nil
}

// parallelLines is the fewest lines a part of a parallel parse has: below
// it, starting goroutines costs about what they save.
const parallelLines = 4096

// parseLines appends the connections of text, whose first line is number
// first, to conns.
func parseLines(text string, first int, conns []Conn) ([]Conn, error) {
	for n := first; text != ""; n++ {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		conns = append(conns, Conn{})
		if err := parseConn(line, &conns[len(conns)-1]); err != nil {
			return nil, fmt.Errorf("conntrack line %d %q: %w", n, line, err)
		}
	}
	return conns, nil
}

// parseConn parses one line into c, which is zero.
func parseConn(line string, c *Conn) error {
	first, rest, err := nextTop(line)
	if err != nil {
		return err
	}
	if c.Proto, err = parseProto(first); err != nil {
		return err
	}
	var haveOrig, haveReply bool
	for rest != "" {
		var it string
		if it, rest, err = nextTop(rest); err != nil {
			return err
		}
		k, v, _ := strings.Cut(it, "=")
		switch k {
		case "orig", "reply":
			t, cnt, counted, err := parseTuple(v)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if k == "orig" {
				c.Orig, c.OrigCnt, haveOrig = t, cnt, true
			} else {
				c.Reply, c.ReplyCnt, haveReply = t, cnt, true
			}
			c.Counted = c.Counted || counted
		case "zone":
			z, err := strconv.ParseUint(v, 0, 16)
			if err != nil {
				return fmt.Errorf("zone %q: %w", v, err)
			}
			c.Zone = uint16(z)
		case "mark":
			m, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				return fmt.Errorf("mark %q: %w", v, err)
			}
			c.Mark = uint32(m)
		case "labels":
			if err := parseLabels(v, &c.Labels); err != nil {
				return err
			}
		case "timeout":
			t, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return fmt.Errorf("timeout %q: %w", v, err)
			}
			c.Timeout = uint32(t)
		case "start":
			// The kernel datapath prints nanoseconds since the epoch.
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil && ns > 0 {
				c.Start = time.Unix(0, ns)
			}
		case "protoinfo":
			c.TCPState, c.closed = parseTCPState(v)
		}
	}
	if !haveOrig || !haveReply {
		return fmt.Errorf("want protocol, orig and reply tuples")
	}
	return nil
}

// nextTop returns s's first item, up to the first comma outside
// parentheses, and what follows that comma. It allocates nothing: the
// parser calls it a dozen times per connection, 50,000 connections a poll.
func nextTop(s string) (item, rest string, err error) {
	end := strings.IndexByte(s, ',')
	if end < 0 {
		end = len(s)
	}
	open := strings.IndexByte(s[:end], '(')
	if open < 0 {
		if strings.IndexByte(s[:end], ')') >= 0 {
			return "", "", fmt.Errorf("unbalanced ')' in %q", s[:end])
		}
	} else {
		if strings.IndexByte(s[:open], ')') >= 0 {
			return "", "", fmt.Errorf("unbalanced ')' in %q", s[:open])
		}
		depth := 0
		end = -1
	scan:
		for i := open; i < len(s); i++ {
			switch s[i] {
			case '(':
				depth++
			case ')':
				depth--
			case ',':
				if depth == 0 {
					end = i
					break scan
				}
			}
			if depth < 0 {
				return "", "", fmt.Errorf("unbalanced ')' at %q", s[:i+1])
			}
		}
		if depth != 0 {
			return "", "", fmt.Errorf("unbalanced '('")
		}
		if end < 0 {
			end = len(s)
		}
	}
	if end == len(s) {
		return s, "", nil
	}
	return s[:end], s[end+1:], nil
}

func parseProto(s string) (uint8, error) {
	switch s {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	case "icmp6", "icmpv6", "ipv6-icmp":
		return ProtoICMPv6, nil
	case "sctp":
		return ProtoSCTP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("protocol %q", s)
	}
	return uint8(n), nil
}

func unparen(v string) (string, bool) {
	if len(v) < 2 || v[0] != '(' || v[len(v)-1] != ')' {
		return "", false
	}
	return v[1 : len(v)-1], true
}

func parseTuple(v string) (Tuple, Counters, bool, error) {
	var t Tuple
	var cnt Counters
	var counted bool
	inner, ok := unparen(v)
	if !ok {
		return t, cnt, false, fmt.Errorf("want (...), got %q", v)
	}
	for inner != "" {
		var kv string
		kv, inner, _ = strings.Cut(inner, ",")
		k, val, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "src", "dst":
			var a netip.Addr
			if a, err = netip.ParseAddr(val); err == nil {
				if k == "src" {
					t.Src = a
				} else {
					t.Dst = a
				}
			}
		case "sport", "dport", "id":
			var p uint64
			if p, err = strconv.ParseUint(val, 10, 16); err == nil {
				switch k {
				case "sport":
					t.SrcPort = uint16(p)
				case "dport":
					t.DstPort = uint16(p)
				default:
					t.ICMPID = uint16(p)
				}
			}
		case "type", "code":
			var p uint64
			if p, err = strconv.ParseUint(val, 10, 8); err == nil {
				if k == "type" {
					t.ICMPType = uint8(p)
				} else {
					t.ICMPCode = uint8(p)
				}
			}
		case "packets", "bytes":
			var p uint64
			if p, err = strconv.ParseUint(val, 10, 64); err == nil {
				counted = true
				if k == "packets" {
					cnt.Packets = p
				} else {
					cnt.Bytes = p
				}
			}
		}
		if err != nil {
			return t, cnt, false, fmt.Errorf("%s %q: %w", k, val, err)
		}
	}
	if !t.Src.IsValid() || !t.Dst.IsValid() {
		return t, cnt, false, fmt.Errorf("want src and dst addresses")
	}
	return t, cnt, counted, nil
}

var zeroDigits = [32]byte([]byte(strings.Repeat("0", 32)))

func parseLabels(v string, out *[16]byte) error {
	h := strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X")
	if h == "" || len(h) > 32 {
		return fmt.Errorf("labels %q: want 1 to 32 hex digits", v)
	}
	// Right-aligned among 32 zero digits: an odd count gets its implied
	// leading zero.
	digits := zeroDigits
	copy(digits[32-len(h):], h)
	var b [16]byte
	if _, err := hex.Decode(b[:], digits[:]); err != nil {
		return fmt.Errorf("labels %q: %w", v, err)
	}
	*out = b
	return nil
}

// parseTCPState reads the state from protoinfo=(state=X) (the kernel's one
// state, or OVS's summary without -m) or from the two per-direction states
// OVS's userspace conntrack keeps (-m: state_orig=X,state_reply=Y, in the
// manner of pf: FIN_WAIT_2 means "this side's FIN was acknowledged"). It
// returns the state to report and whether the connection is over.
func parseTCPState(v string) (string, bool) {
	inner, ok := unparen(v)
	if !ok {
		return "", false
	}
	var orig, reply string
	for inner != "" {
		var kv string
		kv, inner, _ = strings.Cut(inner, ",")
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "state":
			return val, val == "TIME_WAIT" || val == "CLOSE" || val == "CLOSED"
		case "state_orig":
			orig = val
		case "state_reply":
			reply = val
		}
	}
	done := func(s string) bool { return s == "FIN_WAIT_2" || s == "TIME_WAIT" }
	if done(orig) && done(reply) {
		// Both sides closed: what OVS prints without -m.
		return "TIME_WAIT", true
	}
	// The further along of the two, in OVS's order (lib/ct-dpif.h).
	if tcpOrder[reply] > tcpOrder[orig] {
		return reply, false
	}
	return orig, false
}

var tcpOrder = map[string]int{
	"CLOSED": 0, "LISTEN": 1, "SYN_SENT": 2, "SYN_RECV": 3, "ESTABLISHED": 4, "CLOSE_WAIT": 5,
	"FIN_WAIT_1": 6, "CLOSING": 7, "LAST_ACK": 8, "FIN_WAIT_2": 9, "TIME_WAIT": 10,
}

// Caller is the unixctl call ConntrackSource needs; *appctl.Client has it.
type Caller interface {
	Call(ctx context.Context, method string, args ...string) (string, error)
}

// ConntrackSource dumps one conntrack zone of ovs-vswitchd's datapath.
type ConntrackSource struct {
	Appctl Caller
	// Datapath names the datapath ("netdev@ovs-netdev" for the userspace
	// one, "system@ovs-system" for the kernel's). Empty lets OVS pick the
	// only one, but then every call also tries to list the kernel's
	// datapaths and, without the kernel module, logs a warning each poll.
	Datapath string
	Zone     uint16
}

// Dump returns the zone's connections.
func (s ConntrackSource) Dump(ctx context.Context) ([]Conn, error) {
	args := []string{"-m", "-s"}
	if s.Datapath != "" {
		args = append(args, s.Datapath)
	}
	args = append(args, "zone="+strconv.Itoa(int(s.Zone)))
	out, err := s.Appctl.Call(ctx, "dpctl/dump-conntrack", args...)
	if err != nil {
		return nil, fmt.Errorf("dump conntrack zone %d: %w", s.Zone, err)
	}
	return ParseConntrack(out)
}
