package agent

import (
	"encoding/binary"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/pipeline"
)

// dpFlow is one datapath flow (megaflow) of `dpctl/dump-flows -m`, reduced
// to what decides whether a policy change concerns it: its IPv4 addresses,
// protocol and destination port, each with its mask (mask 0: any), and
// its conntrack state.
type dpFlow struct {
	ufid     string
	ipv4     bool // eth_type 0x0800, or not matched at all
	ctState  masked
	src, dst masked
	proto    masked
	dport    masked
	unrecogn bool // a line this parser could not read: treat as concerned
	drops    bool // its actions drop the packet
}

// masked is a field value under a mask; mask 0 matches anything.
type masked struct{ v, m uint32 }

func (a masked) overlaps(b masked) bool { return (a.v^b.v)&a.m&b.m == 0 }

var (
	dpUFIDRE  = regexp.MustCompile(`^ufid:([0-9a-fA-F-]+),\s*`)
	dpFieldRE = regexp.MustCompile(`(\w+)\(([^()]*)\)`)
)

// parseDatapathFlows reads the output of `ovs-appctl dpctl/dump-flows -m`.
// Lines without a ufid (headers such as "flow-dump from the main thread:")
// are skipped.
func parseDatapathFlows(out string) []dpFlow {
	var flows []dpFlow
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		m := dpUFIDRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key, acts := line[len(m[0]):], ""
		if i := strings.Index(key, ", actions:"); i >= 0 {
			acts, _, _ = strings.Cut(key[i+len(", actions:"):], ", dp-extra-info")
		}
		if i := strings.Index(key, ", packets:"); i >= 0 {
			key = key[:i]
		}
		f := parseDatapathKey(m[1], key)
		f.drops = acts == "drop"
		flows = append(flows, f)
	}
	return flows
}

func parseDatapathKey(ufid, key string) dpFlow {
	f := dpFlow{ufid: ufid, ipv4: true}
	for _, m := range dpFieldRE.FindAllStringSubmatch(key, -1) {
		name, args := m[1], m[2]
		var ok = true
		switch name {
		case "eth_type":
			v, err := parseMasked(args, parseUint)
			f.ipv4 = err != nil || v.v&v.m == 0x0800&v.m
			ok = err == nil
		case "ct_state":
			f.ctState, ok = must(parseMasked(args, parseUint))
		case "ipv4":
			for _, kv := range strings.Split(args, ",") {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "src":
					f.src, ok = must(parseMasked(v, parseIPv4))
				case "dst":
					f.dst, ok = must(parseMasked(v, parseIPv4))
				case "proto":
					f.proto, ok = must(parseMasked(v, parseUint))
				}
				if !ok {
					break
				}
			}
		case "tcp", "udp", "sctp":
			for _, kv := range strings.Split(args, ",") {
				if k, v, _ := strings.Cut(kv, "="); k == "dst" {
					f.dport, ok = must(parseMasked(v, parseUint))
				}
			}
		}
		if !ok {
			f.unrecogn = true
		}
	}
	return f
}

func must(v masked, err error) (masked, bool) { return v, err == nil }

// parseMasked reads "value" (exact) or "value/mask".
func parseMasked(s string, parse func(string) (uint32, uint32, error)) (masked, error) {
	val, msk, hasMask := strings.Cut(s, "/")
	v, full, err := parse(val)
	if err != nil {
		return masked{}, err
	}
	if !hasMask {
		return masked{v, full}, nil
	}
	m, _, err := parse(msk)
	if err != nil {
		return masked{}, err
	}
	return masked{v & m, m}, nil
}

func parseUint(s string) (uint32, uint32, error) {
	v, err := strconv.ParseUint(s, 0, 32)
	return uint32(v), 0xffffffff, err
}

func parseIPv4(s string) (uint32, uint32, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, 0, strconv.ErrSyntax
	}
	b := a.As4()
	return binary.BigEndian.Uint32(b[:]), 0xffffffff, nil
}

// conntrack state bits as the datapath prints them.
const (
	ctNew     = 0x01
	ctTracked = 0x20
)

// concernedBy reports whether traffic that n no longer allows could take
// this datapath flow: an IPv4 flow that went through a policy table with a
// new connection's packet, between n's targets and peers, for n's
// services, whose actions let the packet through (a drop stays a drop
// however the policies narrow). Every packet that meets a policy table is
// checked against its
// established-connection bypass (ct_state=-new+trk), so such a flow
// matches ct_state's new and tracked bits, both set; a flow that does not
// (before conntrack, an established connection, a table policy does not
// see) made no policy decision. A field the flow does not match on could
// be anything.
func (f *dpFlow) concernedBy(n policy.Narrowed) bool {
	if f.unrecogn || n.Everything() {
		return true
	}
	const newTracked = ctNew | ctTracked
	if f.drops || !f.ipv4 || f.ctState.m&newTracked != newTracked || f.ctState.v&newTracked != newTracked {
		return false
	}
	target, peer := f.dst, f.src
	if n.Direction == pipeline.PolicyEgress {
		target, peer = f.src, f.dst
	}
	hit := false
	for _, t := range n.Targets {
		hit = hit || t.Is4() && target.overlaps(prefixMasked(netip.PrefixFrom(t, 32)))
	}
	if !hit {
		return false
	}
	if len(n.Peers) > 0 {
		hit = false
		for _, p := range n.Peers {
			hit = hit || p.Addr().Is4() && peer.overlaps(prefixMasked(p))
		}
		if !hit {
			return false
		}
	}
	if len(n.Services) == 0 {
		return true
	}
	for _, s := range n.Services {
		if !f.proto.overlaps(masked{uint32(s.Protocol), 0xff}) {
			continue
		}
		if s.Port == 0 {
			return true
		}
		end := s.EndPort
		if end == 0 {
			end = s.Port
		}
		for _, pm := range pipeline.PortRangeMasks(s.Port, end) {
			if f.dport.overlaps(masked{uint32(pm.Value), uint32(pm.Mask)}) {
				return true
			}
		}
	}
	return false
}

// dropsNewTo reports whether this datapath flow drops a new connection's
// packet that could be for one of addrs (a flow the parser could not read
// counts).
func (f *dpFlow) dropsNewTo(addrs []netip.Addr) bool {
	if f.unrecogn {
		return true
	}
	const newTracked = ctNew | ctTracked
	if !f.drops || !f.ipv4 || f.ctState.m&newTracked != newTracked || f.ctState.v&newTracked != newTracked {
		return false
	}
	return slices.ContainsFunc(addrs, func(a netip.Addr) bool {
		return a.Is4() && f.dst.overlaps(prefixMasked(netip.PrefixFrom(a, 32)))
	})
}

func prefixMasked(p netip.Prefix) masked {
	if !p.Addr().Is4() {
		return masked{}
	}
	b := p.Masked().Addr().As4()
	m := uint32(0)
	if p.Bits() > 0 {
		m = ^uint32(0) << (32 - p.Bits())
	}
	return masked{binary.BigEndian.Uint32(b[:]), m}
}
