package windows

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/Microsoft/hcsshim/hcn"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/platform/platformtest"
)

// recorder is the call log the fakes share, so a test sees HNS, vSwitch,
// IP stack and NAT calls in the order they happened. Only calls that change
// something are logged; reads are not. FailNext makes the next call of a
// method ("CreateEndpoint", "AddAddress", ...) fail.
type recorder struct {
	mu     sync.Mutex
	log    []string
	faults map[string]error
}

func (r *recorder) logf(format string, args ...any) {
	r.log = append(r.log, fmt.Sprintf(format, args...))
}

// fault returns the injected error for method and logs the failed call.
func (r *recorder) fault(method, line string) error {
	err := r.faults[method]
	if err != nil {
		delete(r.faults, method)
		r.logf("%s: error: %v", line, err)
	}
	return err
}

func (r *recorder) FailNext(method string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.faults == nil {
		r.faults = map[string]error{}
	}
	r.faults[method] = err
}

// Take returns the log so far and forgets it.
func (r *recorder) Take() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := strings.Join(r.log, "\n")
	r.log = nil
	return s
}

// host is one fake Windows node: HNS, the vSwitch extension, the IP stack
// and WinNAT, all recording into one log, and the core's OVSDB.
type host struct {
	*recorder
	hns   *fakeHNS
	vswt  *fakeVSwitch
	stack *fakeStack
	nat   *fakeNAT
	ovs   *platformtest.FakeOVSDB
}

func newHost() *host {
	r := &recorder{}
	h := &host{recorder: r, ovs: platformtest.NewFakeOVSDB()}
	h.stack = &fakeStack{recorder: r, ovs: h.ovs, next: 10}
	h.hns = &fakeHNS{recorder: r, stack: h.stack, namespaces: map[string]bool{}}
	h.vswt = &fakeVSwitch{recorder: r, enabled: map[string]bool{}}
	h.nat = &fakeNAT{recorder: r}
	return h
}

func (h *host) backend(t *testing.T) *Backend {
	t.Helper()
	b, err := newBackend(platform.Config{Logger: testLogger(t), OVSDB: h.ovs},
		seams{hns: h.hns, vswt: h.vswt, stack: h.stack, nat: h.nat, appctl: noAppctl})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeHNS keeps networks, endpoints and namespaces in memory. Creating a
// Transparent network moves the adapter's addresses and gateway routes to
// a new "vEthernet (<adapter>)" interface, as HNS does.
type fakeHNS struct {
	*recorder
	stack      *fakeStack
	networks   []hcn.HostComputeNetwork
	endpoints  []hcn.HostComputeEndpoint
	namespaces map[string]bool
	ids        int
}

func (f *fakeHNS) id(kind string) string {
	f.ids++
	return fmt.Sprintf("%s-%d", kind, f.ids)
}

func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "!" + err.Error()
	}
	return string(b)
}

func (f *fakeHNS) Networks(context.Context) ([]hcn.HostComputeNetwork, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.networks), nil
}

func (f *fakeHNS) NetworkByName(_ context.Context, name string) (*hcn.HostComputeNetwork, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.networks {
		if n.Name == name {
			return &n, nil
		}
	}
	return nil, nil
}

func (f *fakeHNS) CreateNetwork(_ context.Context, n *hcn.HostComputeNetwork) (*hcn.HostComputeNetwork, error) {
	f.mu.Lock()
	line := "hns CreateNetwork " + compact(n)
	if err := f.fault("CreateNetwork", line); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	c := *n
	c.Id = f.id("net")
	f.networks = append(f.networks, c)
	f.logf("%s -> %s", line, c.Id)
	f.mu.Unlock()
	f.stack.hnsCreatedVNIC(networkAdapter(&c))
	return &c, nil
}

func (f *fakeHNS) DeleteNetwork(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "hns DeleteNetwork " + id
	if err := f.fault("DeleteNetwork", line); err != nil {
		return err
	}
	f.networks = slices.DeleteFunc(f.networks, func(n hcn.HostComputeNetwork) bool { return n.Id == id })
	f.endpoints = slices.DeleteFunc(f.endpoints, func(e hcn.HostComputeEndpoint) bool { return e.HostComputeNetwork == id })
	f.logf("%s", line)
	return nil
}

func (f *fakeHNS) Endpoints(_ context.Context, networkID string) ([]hcn.HostComputeEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("Endpoints", "hns Endpoints "+networkID); err != nil {
		return nil, err
	}
	var out []hcn.HostComputeEndpoint
	for _, e := range f.endpoints {
		if e.HostComputeNetwork == networkID {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeHNS) CreateEndpoint(_ context.Context, networkID string, ep *hcn.HostComputeEndpoint) (*hcn.HostComputeEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "hns CreateEndpoint " + networkID + " " + compact(ep)
	if err := f.fault("CreateEndpoint", line); err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(f.networks, func(n hcn.HostComputeNetwork) bool { return n.Id == networkID }) {
		f.logf("%s: error: no network", line)
		return nil, hcn.NetworkNotFoundError{NetworkID: networkID}
	}
	c := *ep
	c.Id = f.id("ep")
	c.HostComputeNetwork = networkID
	if c.MacAddress == "" {
		c.MacAddress = fmt.Sprintf("00-15-5D-00-00-%02X", f.ids)
	}
	f.endpoints = append(f.endpoints, c)
	f.logf("%s -> %s", line, c.Id)
	return &c, nil
}

func (f *fakeHNS) DeleteEndpoint(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "hns DeleteEndpoint " + id
	if err := f.fault("DeleteEndpoint", line); err != nil {
		return err
	}
	n := len(f.endpoints)
	f.endpoints = slices.DeleteFunc(f.endpoints, func(e hcn.HostComputeEndpoint) bool { return e.Id == id })
	if len(f.endpoints) == n {
		line += " (absent)"
	}
	f.logf("%s", line)
	return nil
}

func (f *fakeHNS) AttachEndpoint(_ context.Context, namespaceID, endpointID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "hns AttachEndpoint " + namespaceID + " " + endpointID
	if err := f.fault("AttachEndpoint", line); err != nil {
		return err
	}
	if !f.namespaces[strings.ToLower(namespaceID)] {
		f.logf("%s: error: no namespace", line)
		return hcn.NamespaceNotFoundError{NamespaceID: namespaceID}
	}
	for i := range f.endpoints {
		if f.endpoints[i].Id == endpointID {
			f.endpoints[i].HostComputeNamespace = namespaceID
		}
	}
	f.logf("%s", line)
	return nil
}

func (f *fakeHNS) NamespaceExists(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.namespaces[strings.ToLower(id)], nil
}

// dumpEndpoints renders the endpoints, one per line.
func (f *fakeHNS) dumpEndpoints() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, e := range f.endpoints {
		lines = append(lines, fmt.Sprintf("%s %s ns=%s mac=%s", e.Id, e.Name, e.HostComputeNamespace, e.MacAddress))
	}
	return strings.Join(lines, "\n")
}

type fakeVSwitch struct {
	*recorder
	enabled map[string]bool
}

func (f *fakeVSwitch) ExtensionEnabled(_ context.Context, networkID, ext string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enabled[networkID+"/"+ext], nil
}

func (f *fakeVSwitch) EnableExtension(_ context.Context, networkID, ext string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "vswitch EnableExtension " + networkID + " " + ext
	if err := f.fault("EnableExtension", line); err != nil {
		return err
	}
	f.enabled[networkID+"/"+ext] = true
	f.logf("%s", line)
	return nil
}

// fakeStack is the host's IP stack. Interfaces of the OVS internal ports
// appear once the port exists in the fake OVSDB.
type fakeStack struct {
	*recorder
	ovs       *platformtest.FakeOVSDB
	ifs       []ipInterface
	routes    []ipRoute
	neighbors []ipNeighbor // permanent entries
	// learned are the entries the host's own resolution made (any state but
	// permanent): Neighbor sees them, Neighbors does not.
	learned []neighborEntry
	forward map[string]bool
	next    uint32
	// watchers are WatchRoutes' callers; deleteRouteBehindBack tells them.
	watchers map[int]func()
	nextW    int
	// vnics are the MACs of adapters in containers' compartments (a
	// started sandbox's endpoint vNIC).
	vnics map[string]bool
}

func (f *fakeStack) AdapterWithMAC(_ context.Context, mac net.HardwareAddr) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("AdapterWithMAC", "stack AdapterWithMAC "+mac.String()); err != nil {
		return false, err
	}
	if f.vnics[mac.String()] {
		return true, nil
	}
	return slices.ContainsFunc(f.ifs, func(i ipInterface) bool { return bytes.Equal(i.MAC, mac) }), nil
}

// sandboxStarted is what the runtime starting a pod's sandbox does: the
// endpoint's vNIC appears in the container's compartment.
func (f *fakeStack) sandboxStarted(mac string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vnics == nil {
		f.vnics = map[string]bool{}
	}
	m, _ := net.ParseMAC(mac)
	f.vnics[m.String()] = true
}

func (f *fakeStack) WatchRoutes(ctx context.Context, changed func()) error {
	f.mu.Lock()
	if f.watchers == nil {
		f.watchers = map[int]func(){}
	}
	id := f.nextW
	f.nextW++
	f.watchers[id] = changed
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	delete(f.watchers, id)
	f.mu.Unlock()
	return nil
}

// deleteRouteBehindBack deletes the routes to dst as someone other than
// Seine would (not logged) and notifies the watchers as Windows does.
func (f *fakeStack) deleteRouteBehindBack(dst netip.Prefix) {
	f.mu.Lock()
	f.routes = slices.DeleteFunc(f.routes, func(r ipRoute) bool { return r.Dst == dst })
	var fns []func()
	for _, fn := range f.watchers {
		fns = append(fns, fn)
	}
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// watching reports how many WatchRoutes calls are registered.
func (f *fakeStack) watching() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

func fakeMAC(name string) net.HardwareAddr {
	h := sha256.Sum256([]byte(name))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

func (f *fakeStack) addInterface(name string, mtu int, ips ...string) ipInterface {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addInterfaceLocked(name, mtu, ips...)
}

func (f *fakeStack) addInterfaceLocked(name string, mtu int, ips ...string) ipInterface {
	f.next++
	i := ipInterface{Index: f.next, Name: name, MAC: fakeMAC(name), MTU: mtu}
	for _, s := range ips {
		i.IPs = append(i.IPs, netip.MustParsePrefix(s))
	}
	f.ifs = append(f.ifs, i)
	return i
}

func (f *fakeStack) byIndex(idx uint32) *ipInterface {
	for i := range f.ifs {
		if f.ifs[i].Index == idx {
			return &f.ifs[i]
		}
	}
	return nil
}

func (f *fakeStack) name(idx uint32) string {
	if i := f.byIndex(idx); i != nil {
		return i.Name
	}
	return fmt.Sprintf("if%d", idx)
}

// hnsCreatedVNIC is what creating a Transparent network does to the host:
// the adapter's addresses and gateway routes move to the host vNIC.
func (f *fakeStack) hnsCreatedVNIC(adapter string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	up, ok := findInterface(f.ifs, adapter)
	if !ok {
		return
	}
	vnic := f.addInterfaceLocked(hostVNICName(adapter), up.MTU)
	vnic.MAC = up.MAC
	f.byIndex(vnic.Index).MAC = up.MAC
	f.byIndex(vnic.Index).IPs = up.IPs
	f.byIndex(up.Index).IPs = nil
	for i := range f.routes {
		if f.routes[i].IfIndex == up.Index {
			f.routes[i].IfIndex = vnic.Index
		}
	}
}

func (f *fakeStack) Interfaces(ctx context.Context) ([]ipInterface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("Interfaces", "stack Interfaces"); err != nil {
		return nil, err
	}
	// The OVS extension creates host interfaces for internal ports.
	for _, name := range []string{platform.DefaultBridge, platform.DefaultGateway} {
		if _, ok := findInterface(f.ifs, name); ok {
			continue
		}
		if p, err := f.ovs.GetPort(ctx, name); err == nil && p.Type == "internal" {
			f.addInterfaceLocked(name, 1500)
		}
	}
	out := slices.Clone(f.ifs)
	for i := range out {
		out[i].IPs = slices.Clone(out[i].IPs)
	}
	return out, nil
}

func (f *fakeStack) AddAddress(_ context.Context, idx uint32, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("stack AddAddress %s %s", f.name(idx), p)
	if err := f.fault("AddAddress", line); err != nil {
		return err
	}
	i := f.byIndex(idx)
	if !slices.Contains(i.IPs, p) {
		i.IPs = append(i.IPs, p)
	}
	f.logf("%s", line)
	return nil
}

func (f *fakeStack) DeleteAddress(_ context.Context, idx uint32, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("stack DeleteAddress %s %s", f.name(idx), p)
	if err := f.fault("DeleteAddress", line); err != nil {
		return err
	}
	i := f.byIndex(idx)
	i.IPs = slices.DeleteFunc(i.IPs, func(q netip.Prefix) bool { return q == p })
	f.logf("%s", line)
	return nil
}

func (f *fakeStack) EnableForwarding(_ context.Context, idx uint32, ipv6 bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fam := "ipv4"
	if ipv6 {
		fam = "ipv6"
	}
	key := f.name(idx) + " " + fam
	if f.forward[key] {
		return nil
	}
	if f.forward == nil {
		f.forward = map[string]bool{}
	}
	f.forward[key] = true
	f.logf("stack EnableForwarding %s", key)
	return nil
}

func (f *fakeStack) SetMAC(_ context.Context, idx uint32, mac net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("stack SetMAC %s %s", f.name(idx), mac)
	if err := f.fault("SetMAC", line); err != nil {
		return err
	}
	f.byIndex(idx).MAC = slices.Clone(mac)
	f.logf("%s", line)
	return nil
}

func (f *fakeStack) routeText(r ipRoute) string {
	via := "on-link"
	if !r.onLink() {
		via = "via " + r.NextHop.String()
	}
	return fmt.Sprintf("%s %s dev %s metric %d", r.Dst, via, f.name(r.IfIndex), r.Metric)
}

func (f *fakeStack) Routes(context.Context) ([]ipRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("Routes", "stack Routes"); err != nil {
		return nil, err
	}
	return slices.Clone(f.routes), nil
}

func (f *fakeStack) AddRoute(_ context.Context, r ipRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "stack AddRoute " + f.routeText(r)
	if err := f.fault("AddRoute", line); err != nil {
		return err
	}
	if slices.ContainsFunc(f.routes, func(c ipRoute) bool { return c.key() == r.key() }) {
		f.logf("%s: error: exists", line)
		return fmt.Errorf("route %s exists", r)
	}
	f.routes = append(f.routes, r)
	f.logf("%s", line)
	return nil
}

func (f *fakeStack) DeleteRoute(_ context.Context, r ipRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "stack DeleteRoute " + f.routeText(r)
	if err := f.fault("DeleteRoute", line); err != nil {
		return err
	}
	f.routes = slices.DeleteFunc(f.routes, func(c ipRoute) bool { return c.key() == r.key() })
	f.logf("%s", line)
	return nil
}

// dumpRoutes renders the routing table, sorted.
func (f *fakeStack) dumpRoutes() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, r := range f.routes {
		lines = append(lines, f.routeText(r))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (f *fakeStack) Neighbors(context.Context) ([]ipNeighbor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.neighbors), nil
}

// Neighbor finds ip's entry on the interface: a permanent one, else one the
// host learned.
func (f *fakeStack) Neighbor(_ context.Context, idx uint32, ip netip.Addr) (*neighborEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("Neighbor", fmt.Sprintf("stack Neighbor %s dev %s", ip, f.name(idx))); err != nil {
		return nil, err
	}
	for _, n := range f.neighbors {
		if n.IfIndex == idx && n.IP == ip {
			return &neighborEntry{ipNeighbor: ipNeighbor{IfIndex: idx, IP: ip, MAC: slices.Clone(n.MAC)}, State: nlnsPermanent}, nil
		}
	}
	for _, n := range f.learned {
		if n.IfIndex == idx && n.IP == ip {
			n.MAC = slices.Clone(n.MAC)
			return &n, nil
		}
	}
	return nil, nil
}

// learn is the host resolving ip on the interface called dev (or failing
// to, with an empty mac): it replaces the learned entry.
func (f *fakeStack) learn(dev, ip, mac string, state neighborState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, ok := findInterface(f.ifs, dev)
	if !ok {
		panic("learn: no interface " + dev)
	}
	n := neighborEntry{ipNeighbor: ipNeighbor{IfIndex: i.Index, IP: netip.MustParseAddr(ip)}, State: state}
	if mac != "" {
		m, err := net.ParseMAC(mac)
		if err != nil {
			panic(err)
		}
		n.MAC = m
	}
	f.learned = slices.DeleteFunc(f.learned, func(c neighborEntry) bool { return c.IfIndex == n.IfIndex && c.IP == n.IP })
	f.learned = append(f.learned, n)
}

func (f *fakeStack) SetNeighbor(_ context.Context, n ipNeighbor) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("stack SetNeighbor %s lladdr %s dev %s", n.IP, n.MAC, f.name(n.IfIndex))
	if err := f.fault("SetNeighbor", line); err != nil {
		return err
	}
	f.neighbors = slices.DeleteFunc(f.neighbors, func(c ipNeighbor) bool { return c.IfIndex == n.IfIndex && c.IP == n.IP })
	f.neighbors = append(f.neighbors, n)
	f.logf("%s", line)
	return nil
}

func (f *fakeStack) DeleteNeighbor(_ context.Context, n ipNeighbor) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("stack DeleteNeighbor %s dev %s", n.IP, f.name(n.IfIndex))
	if err := f.fault("DeleteNeighbor", line); err != nil {
		return err
	}
	f.neighbors = slices.DeleteFunc(f.neighbors, func(c ipNeighbor) bool {
		return c.IfIndex == n.IfIndex && c.IP == n.IP && bytes.Equal(c.MAC, n.MAC)
	})
	f.logf("%s", line)
	return nil
}

type fakeNAT struct {
	*recorder
	rules []natRule
}

func (f *fakeNAT) NATs(context.Context) ([]natRule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rules), nil
}

func (f *fakeNAT) AddNAT(_ context.Context, n natRule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "nat AddNAT " + n.String()
	if err := f.fault("AddNAT", line); err != nil {
		return err
	}
	for _, c := range f.rules {
		if c.Internal.Overlaps(n.Internal) {
			f.logf("%s: error: overlaps %s", line, c.Name)
			return fmt.Errorf("overlaps %s", c.Name)
		}
	}
	f.rules = append(f.rules, n)
	f.logf("%s", line)
	return nil
}

func (f *fakeNAT) RemoveNAT(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "nat RemoveNAT " + name
	if err := f.fault("RemoveNAT", line); err != nil {
		return err
	}
	f.rules = slices.DeleteFunc(f.rules, func(c natRule) bool { return c.Name == name })
	f.logf("%s", line)
	return nil
}
