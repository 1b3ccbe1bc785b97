package linux

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/seine-cni/seine/platform"
)

// Seine's iptables chains. Each Sync declares them in an iptables-restore
// --noflush input, which flushes them, and refills them from the state, so
// a rule the state no longer implies is gone after the next Sync.
const (
	ChainPostrouting = "SEINE-POSTROUTING"
	ChainForward     = "SEINE-FORWARD"
	ChainPrerouting  = "SEINE-PREROUTING"
)

// jump is the one rule in a built-in chain that sends packets to Seine's chain.
type jump struct {
	table, chain, target, comment string
	// insert puts the jump first in the chain rather than last: FORWARD
	// often ends in DROP rules or policy (Docker) that must not win.
	insert bool
}

var jumps = []jump{
	{table: "nat", chain: "POSTROUTING", target: ChainPostrouting, comment: "seine: SNAT pod traffic leaving the cluster"},
	{table: "filter", chain: "FORWARD", target: ChainForward, comment: "seine: forward pod traffic", insert: true},
	{table: "raw", chain: "PREROUTING", target: ChainPrerouting, comment: "seine: frames the host stack must not process", insert: true},
}

// spec is the jump's rule spec after the chain name, exactly as
// iptables-save prints it, so that a saved jump can be recognised as current.
func (j jump) spec() string {
	return fmt.Sprintf(`-m comment --comment "%s" -j %s`, j.comment, j.target)
}

// iptablesFamily names the programs of one IP family.
type iptablesFamily struct {
	ipv6          bool
	save, restore string
}

var (
	familyV4 = iptablesFamily{ipv6: false, save: "iptables-save", restore: "iptables-restore"}
	familyV6 = iptablesFamily{ipv6: true, save: "ip6tables-save", restore: "ip6tables-restore"}
)

// natRules are SEINE-POSTROUTING's rules: no SNAT to cluster pods, then
// SNAT (or MASQUERADE without an address of the family) of the node's pod
// CIDRs unless they leave through the gateway (back to pods).
func natRules(s platform.HostState, ipv6 bool) []string {
	if s.NoSNAT {
		return nil
	}
	var rules []string
	var sources []string
	for _, p := range s.PodCIDRs {
		if p.Addr().Is6() == ipv6 {
			sources = append(sources, p.String())
		}
	}
	if len(sources) == 0 {
		return nil
	}
	for _, c := range s.ClusterCIDRs {
		if c.Addr().Is6() == ipv6 {
			rules = append(rules, fmt.Sprintf(`-A %s -d %s -m comment --comment "seine: no SNAT to cluster pods" -j RETURN`, ChainPostrouting, c))
		}
	}
	target := "MASQUERADE"
	if ip := s.SNATIP(ipv6); ip.IsValid() {
		target = "SNAT --to-source " + ip.String()
	}
	out := ""
	if s.Gateway != "" {
		out = " ! -o " + s.Gateway
	}
	for _, src := range sources {
		rules = append(rules, fmt.Sprintf(`-A %s -s %s%s -m comment --comment "seine: SNAT pods leaving the cluster" -j %s`, ChainPostrouting, src, out, target))
	}
	return rules
}

// filterRules are SEINE-FORWARD's rules: accept what the gateway forwards,
// except traffic to kube-proxy's service CIDRs that kube-proxy did not
// DNAT (a Service without endpoints): that goes on to kube-proxy's own
// FORWARD rules, which reject it.
func filterRules(s platform.HostState, ipv6 bool) []string {
	if s.Gateway == "" {
		return nil
	}
	var rules []string
	for _, c := range s.KubeProxyCIDRs {
		if c.Addr().Is6() == ipv6 {
			rules = append(rules, fmt.Sprintf(`-A %s -d %s -m comment --comment "seine: service traffic kube-proxy did not translate" -j RETURN`, ChainForward, c))
		}
	}
	return append(rules,
		fmt.Sprintf(`-A %s -i %s -m comment --comment "seine: from pods" -j ACCEPT`, ChainForward, s.Gateway),
		fmt.Sprintf(`-A %s -o %s -m comment --comment "seine: to pods" -j ACCEPT`, ChainForward, s.Gateway),
	)
}

// rawRules are SEINE-PREROUTING's rules: drop, before conntrack, what
// arrives on the interfaces OVS reads through packet sockets (packet sockets
// have seen the frame already).
func rawRules(s platform.HostState) []string {
	var rules []string
	for _, name := range s.NoHostIngress {
		rules = append(rules, fmt.Sprintf(`-A %s -i %s -m comment --comment "seine: OVS userspace datapath port" -j DROP`, ChainPrerouting, name))
	}
	return rules
}

// restoreInput is the whole iptables-restore --noflush input for one family:
// Seine's chains declared (hence flushed) and refilled, and the jump rules
// fixed up against saved (the family's iptables-save output) so that each
// exists exactly once.
func restoreInput(s platform.HostState, ipv6 bool, saved string) string {
	var b strings.Builder
	for _, j := range jumps {
		fmt.Fprintf(&b, "*%s\n:%s - [0:0]\n", j.table, j.target)
		for _, r := range chainRules(s, ipv6, j.target) {
			b.WriteString(r + "\n")
		}
		for _, r := range jumpFix(saved, j) {
			b.WriteString(r + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// chainRules are the rules of one of Seine's chains for the state.
func chainRules(s platform.HostState, ipv6 bool, chain string) []string {
	switch chain {
	case ChainPostrouting:
		return natRules(s, ipv6)
	case ChainForward:
		return filterRules(s, ipv6)
	case ChainPrerouting:
		return rawRules(s)
	}
	return nil
}

// upToDate reports whether saved (the family's iptables-save output) already
// has Seine's chains with exactly the state's rules and exactly one current
// jump to each, so that a restore would change nothing. iptables-save prints
// rules in the form natRules and its siblings render them (the integration
// test checks that), so a resync that finds the host right runs no
// iptables-restore.
func upToDate(s platform.HostState, ipv6 bool, saved string) bool {
	for _, j := range jumps {
		if jumpFix(saved, j) != nil {
			return false
		}
		have, declared := savedChain(saved, j.table, j.target)
		if !declared || !slices.Equal(have, chainRules(s, ipv6, j.target)) {
			return false
		}
	}
	return true
}

// savedChain returns the rules of chain in table of an iptables-save output,
// and whether the chain exists there.
func savedChain(saved, table, chain string) (rules []string, declared bool) {
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(saved))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			cur = line[1:]
		case cur != table:
		case strings.HasPrefix(line, ":"+chain+" "):
			declared = true
		case strings.HasPrefix(line, "-A "+chain+" "):
			rules = append(rules, line)
		}
	}
	return rules, declared
}

// jumpFix returns the restore lines that leave exactly one current jump j:
// nothing when saved has exactly that; otherwise a delete for every saved
// jump to j.target (duplicates, outdated comments) and one add.
func jumpFix(saved string, j jump) []string {
	found := savedJumps(saved, j)
	current := "-A " + j.chain + " " + j.spec()
	if len(found) == 1 && found[0] == current {
		return nil
	}
	var out []string
	for _, l := range found {
		out = append(out, "-D "+strings.TrimPrefix(l, "-A "))
	}
	if j.insert {
		return append(out, "-I "+j.chain+" 1 "+j.spec())
	}
	return append(out, current)
}

// savedJumps are the rules of j.chain in j.table of an iptables-save output
// that jump to j.target.
func savedJumps(saved string, j jump) []string {
	var out []string
	table := ""
	sc := bufio.NewScanner(strings.NewReader(saved))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case table == j.table && strings.HasPrefix(line, "-A "+j.chain+" ") &&
			(strings.HasSuffix(line, " -j "+j.target) || strings.Contains(line, " -j "+j.target+" ")):
			out = append(out, line)
		}
	}
	return out
}

// syncIPTables applies the state to one family in one iptables-restore
// transaction, after reading the family's rules to fix the jumps up. Between
// the read and the restore another writer could add a jump; the next Sync
// removes a duplicate.
func (b *Backend) syncIPTables(ctx context.Context, s platform.HostState, fam iptablesFamily) error {
	saved, err := b.host.run(ctx, nil, fam.save)
	if err != nil {
		return err
	}
	if upToDate(s, fam.ipv6, string(saved)) {
		return nil
	}
	input := restoreInput(s, fam.ipv6, string(saved))
	if _, err := b.host.run(ctx, []byte(input), fam.restore, "--noflush", "-w", "5"); err != nil {
		return fmt.Errorf("%w\ninput:\n%s", err, input)
	}
	b.log.Info("applied Seine's iptables chains", "family", fam.restore)
	for _, j := range jumps {
		if fix := jumpFix(string(saved), j); len(fix) > 0 {
			b.log.Info("fixed iptables jump", "family", fam.restore, "lines", strings.Join(fix, "; "))
		}
	}
	return nil
}

// seineRules filters an iptables-save output down to the table headers and
// the lines that mention Seine's chains, for diagnostics.
func seineRules(saved string) string {
	var b strings.Builder
	for line := range strings.Lines(saved) {
		if strings.HasPrefix(line, "*") || strings.Contains(line, "SEINE-") {
			b.WriteString(line)
		}
	}
	return b.String()
}
