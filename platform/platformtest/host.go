package platformtest

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/platform"
)

// FakeHostRules is a platform.HostRules that keeps the host's rules and
// logs each Sync as the rules it added (+) and removed (-), like a backend
// that diffs against the host. Tamper changes the host behind its back, as
// an admin or another program would; it is also a
// platform.HostRulesWatcher whose watchers Tamper can notify.
type FakeHostRules struct {
	recorder
	rules    []string
	watchers map[int]func()
	nextID   int
	// NoWatch makes WatchHostRules fail at once, as on a host without
	// change notifications.
	NoWatch bool
}

var (
	_ platform.HostRules        = (*FakeHostRules)(nil)
	_ platform.HostRulesWatcher = (*FakeHostRules)(nil)
)

// Tamper removes the rule (a line of Dump) from the host as someone other
// than Seine would, and tells the watchers when notify is set. It reports
// whether the host had the rule.
func (f *FakeHostRules) Tamper(rule string, notify bool) bool {
	f.mu.Lock()
	i := slices.Index(f.rules, rule)
	if i >= 0 {
		f.rules = slices.Delete(f.rules, i, i+1)
	}
	var notifyFns []func()
	if notify {
		for _, fn := range f.watchers {
			notifyFns = append(notifyFns, fn)
		}
	}
	f.mu.Unlock()
	for _, fn := range notifyFns {
		fn()
	}
	return i >= 0
}

// WatchHostRules registers changed for Tamper's notifications until ctx
// ends (platform.HostRulesWatcher).
func (f *FakeHostRules) WatchHostRules(ctx context.Context, changed func()) error {
	f.mu.Lock()
	if f.NoWatch {
		f.mu.Unlock()
		return platform.NotSupported("fake host rules notifications")
	}
	if f.watchers == nil {
		f.watchers = map[int]func(){}
	}
	id := f.nextID
	f.nextID++
	f.watchers[id] = changed
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	delete(f.watchers, id)
	f.mu.Unlock()
	return nil
}

// NewFakeHostRules returns a fake with no rules.
func NewFakeHostRules() *FakeHostRules { return &FakeHostRules{} }

// Sync validates s and replaces the rules with those of s.
func (f *FakeHostRules) Sync(_ context.Context, s platform.HostState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("Sync"); err != nil {
		f.logf("Sync: error: %v", err)
		return err
	}
	if err := s.Validate(); err != nil {
		f.logf("Sync: error: %v", err)
		return err
	}
	rules := RenderHostState(s)
	var diff []string
	for _, r := range f.rules {
		if !slices.Contains(rules, r) {
			diff = append(diff, "-"+r)
		}
	}
	for _, r := range rules {
		if !slices.Contains(f.rules, r) {
			diff = append(diff, "+"+r)
		}
	}
	f.rules = rules
	if len(diff) == 0 {
		f.logf("Sync (no change)")
		return nil
	}
	f.logf("Sync: %s", strings.Join(diff, "; "))
	return nil
}

// Dump returns the current rules, one per line, sorted.
func (f *FakeHostRules) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.rules) == 0 {
		return ""
	}
	return strings.Join(f.rules, "\n") + "\n"
}

// RenderHostState renders s as sorted rule lines in a backend-neutral form:
//
//	route 10.244.2.0/24 via 192.168.1.12
//	route 10.244.3.0/24 via 10.244.3.1 dev seine-gw0 onlink
//	neigh 169.254.0.253 lladdr aa:bb:cc:dd:ee:ff dev seine-gw0
//	snat 10.244.1.0/24 to 192.168.1.11 except 10.244.0.0/16 and out seine-gw0
//	no-host-ingress eth0
//	kube-proxy 10.96.0.0/16
func RenderHostState(s platform.HostState) []string {
	var out []string
	for _, name := range s.NoHostIngress {
		out = append(out, "no-host-ingress "+name)
	}
	for _, r := range s.PeerRoutes {
		if r.GatewayIP.IsValid() {
			out = append(out, fmt.Sprintf("route %s via %s dev %s onlink", r.PodCIDR, r.GatewayIP, s.Gateway))
		} else {
			out = append(out, fmt.Sprintf("route %s via %s", r.PodCIDR, r.NodeIP))
		}
	}
	for _, r := range s.ServiceRoutes {
		if r.NextHop.IsValid() {
			out = append(out, fmt.Sprintf("route %s via %s dev %s onlink", r.CIDR, r.NextHop, s.Gateway),
				fmt.Sprintf("neigh %s lladdr %s dev %s", r.NextHop, s.ServiceNextHopMAC, s.Gateway))
		} else {
			out = append(out, fmt.Sprintf("route %s dev %s", r.CIDR, s.Gateway))
		}
	}
	for _, c := range s.KubeProxyCIDRs {
		out = append(out, "kube-proxy "+c.String())
	}
	if !s.NoSNAT {
		for _, p := range s.PodCIDRs {
			to := "masquerade"
			if ip := s.SNATIP(p.Addr().Is6()); ip.IsValid() {
				to = "to " + ip.String()
			}
			var except []string
			for _, c := range s.ClusterCIDRs {
				if c.Addr().Is6() == p.Addr().Is6() {
					except = append(except, c.String())
				}
			}
			if s.Gateway != "" {
				except = append(except, "out "+s.Gateway)
			}
			line := fmt.Sprintf("snat %s %s", p, to)
			if len(except) > 0 {
				line += " except " + strings.Join(except, " and ")
			}
			out = append(out, line)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// FakeDiagnostics is a platform.Diagnostics that writes Text.
type FakeDiagnostics struct {
	recorder
	Text string
}

var _ platform.Diagnostics = (*FakeDiagnostics)(nil)

// Collect writes Text to w.
func (f *FakeDiagnostics) Collect(_ context.Context, w io.Writer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("Collect"); err != nil {
		f.logf("Collect: error: %v", err)
		return err
	}
	f.logf("Collect")
	_, err := io.WriteString(w, f.Text)
	return err
}

// FakeBackend is every fake together, as a platform.Backend. Its Log, Dump
// and FailNext are the parts' (b.FakePodAttacher.Log()).
type FakeBackend struct {
	*FakeNodeNetwork
	*FakePodAttacher
	*FakeHostRules
	*FakeDiagnostics
	*FakeNodePorts
	// Closed is set by Close.
	Closed bool
}

var _ platform.Backend = (*FakeBackend)(nil)

// NewFakeBackend returns the fakes over a fresh FakeOVSDB, with uplink eth0
// holding uplinkIPs.
func NewFakeBackend(uplinkIPs ...netip.Prefix) *FakeBackend {
	return &FakeBackend{
		FakeNodeNetwork: NewFakeNodeNetwork(nil, uplinkIPs...),
		FakePodAttacher: NewFakePodAttacher(),
		FakeHostRules:   NewFakeHostRules(),
		FakeDiagnostics: &FakeDiagnostics{},
		FakeNodePorts:   &FakeNodePorts{},
	}
}

// Close marks the backend closed.
func (b *FakeBackend) Close() error {
	b.Closed = true
	return nil
}
