package platformtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// FakeOVSDB is an in-memory platform.OVSDB: bridges with their local port,
// ports with OpenFlow numbers assigned from 1 in creation order (or as
// requested), and MACs 02:00:00:00:hh:ll from the OpenFlow number.
//
// Every port's device exists unless SetDevicePresent says otherwise; a port
// whose device is absent gets ofport -1 and OVS's error, and, as in OVS for
// Windows, keeps it after the device appears until its interface row
// changes (ovs-vswitchd opens a device only on a reconfiguration of the
// row; it does not retry one that failed).
type FakeOVSDB struct {
	recorder
	bridges map[string]ovsdb.BridgeConfig
	ports   map[string]*fakePort
	next    map[string]int // next free ofport per bridge
	absent  map[string]bool
}

// SetDevicePresent says whether the network device a port named name opens
// exists on the host. It changes no port: see FakeOVSDB.
func (f *FakeOVSDB) SetDevicePresent(name string, present bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.absent == nil {
		f.absent = map[string]bool{}
	}
	if present {
		delete(f.absent, name)
	} else {
		f.absent[name] = true
	}
}

// openDevice gives the port an OpenFlow port number if its device exists,
// else -1; the caller holds mu.
func (f *FakeOVSDB) openDevice(bridge string, p *fakePort) {
	if f.absent[p.cfg.Name] {
		p.ofport = -1
		return
	}
	if p.ofport > 0 {
		return
	}
	p.ofport = p.cfg.OFPortRequest
	if p.ofport == 0 {
		for f.ofportUsed(bridge, f.next[bridge]) {
			f.next[bridge]++
		}
		p.ofport = f.next[bridge]
	}
}

type fakePort struct {
	bridge string
	cfg    ovsdb.PortConfig
	ofport int
}

var _ platform.OVSDB = (*FakeOVSDB)(nil)

// NewFakeOVSDB returns an empty database.
func NewFakeOVSDB() *FakeOVSDB {
	return &FakeOVSDB{bridges: map[string]ovsdb.BridgeConfig{}, ports: map[string]*fakePort{}, next: map[string]int{}}
}

// EnsureBridge creates the bridge with its local internal port, or updates it.
func (f *FakeOVSDB) EnsureBridge(_ context.Context, cfg ovsdb.BridgeConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("EnsureBridge %s%s", cfg.Name, bridgeText(cfg))
	if err := f.fault("EnsureBridge"); err != nil {
		f.logf("%s: error: %v", line, err)
		return err
	}
	if cfg.Name == "" {
		f.logf("%s: error: bridge name is empty", line)
		return errors.New("bridge name is empty")
	}
	cur, ok := f.bridges[cfg.Name]
	if ok {
		want := cur
		want.DatapathType, want.FailMode = or(cfg.DatapathType, cur.DatapathType), or(cfg.FailMode, cur.FailMode)
		want.OtherConfig = merged(cur.OtherConfig, cfg.OtherConfig)
		want.ExternalIDs = merged(cur.ExternalIDs, cfg.ExternalIDs)
		if bridgeText(want) == bridgeText(cur) {
			f.logf("%s (no change)", line)
			return nil
		}
		f.bridges[cfg.Name] = want
		f.logf("%s (updated)", line)
		return nil
	}
	cfg.OtherConfig, cfg.ExternalIDs = maps.Clone(cfg.OtherConfig), maps.Clone(cfg.ExternalIDs)
	f.bridges[cfg.Name] = cfg
	f.ports[cfg.Name] = &fakePort{bridge: cfg.Name, cfg: ovsdb.PortConfig{Name: cfg.Name, Type: ovsdb.TypeInternal}, ofport: platform.OFPortLocal}
	f.next[cfg.Name] = 1
	f.logf("%s (created)", line)
	return nil
}

// EnsurePort creates the port on bridge or updates it.
func (f *FakeOVSDB) EnsurePort(_ context.Context, bridge string, p ovsdb.PortConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("EnsurePort %s %s%s", bridge, p.Name, portText(p))
	if err := f.fault("EnsurePort"); err != nil {
		f.logf("%s: error: %v", line, err)
		return err
	}
	if _, ok := f.bridges[bridge]; !ok {
		f.logf("%s: error: no bridge", line)
		return fmt.Errorf("ensure port %s: bridge %s: %w", p.Name, bridge, ovsdb.ErrBridgeNotFound)
	}
	if cur, ok := f.ports[p.Name]; ok {
		want := p
		want.ExternalIDs = merged(cur.cfg.ExternalIDs, p.ExternalIDs)
		if cur.bridge == bridge && portText(want) == portText(cur.cfg) {
			f.logf("%s (no change)", line)
			return nil
		}
		if cur.bridge != bridge {
			delete(f.ports, p.Name)
		} else {
			rowChanged := portText(ovsdb.PortConfig{Type: want.Type, Tunnel: want.Tunnel, Options: want.Options, MTURequest: want.MTURequest}) !=
				portText(ovsdb.PortConfig{Type: cur.cfg.Type, Tunnel: cur.cfg.Tunnel, Options: cur.cfg.Options, MTURequest: cur.cfg.MTURequest})
			cur.cfg = want
			if old := cur.ofport; rowChanged {
				f.openDevice(bridge, cur)
				if cur.ofport != old {
					f.logf("%s (updated ofport %d)", line, cur.ofport)
					return nil
				}
			}
			f.logf("%s (updated)", line)
			return nil
		}
	}
	p.ExternalIDs, p.Options = maps.Clone(p.ExternalIDs), maps.Clone(p.Options)
	np := &fakePort{bridge: bridge, cfg: p}
	f.openDevice(bridge, np)
	f.ports[p.Name] = np
	f.logf("%s (created ofport %d)", line, np.ofport)
	return nil
}

func (f *FakeOVSDB) ofportUsed(bridge string, n int) bool {
	for _, p := range f.ports {
		if p.bridge == bridge && p.ofport == n {
			return true
		}
	}
	return false
}

// DeletePort removes the port; an absent one is not an error.
func (f *FakeOVSDB) DeletePort(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("DeletePort"); err != nil {
		f.logf("DeletePort %s: error: %v", name, err)
		return err
	}
	if _, ok := f.ports[name]; !ok {
		f.logf("DeletePort %s (no change)", name)
		return nil
	}
	delete(f.ports, name)
	f.logf("DeletePort %s", name)
	return nil
}

// GetPort returns the port as *ovsdb.Client would.
func (f *FakeOVSDB) GetPort(_ context.Context, name string) (ovsdb.PortInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.ports[name]
	if !ok {
		return ovsdb.PortInfo{}, fmt.Errorf("port %s: %w", name, ovsdb.ErrPortNotFound)
	}
	info := ovsdb.PortInfo{
		Name: name, Bridge: p.bridge, Type: p.cfg.Type, OFPort: p.ofport,
		Options: maps.Clone(p.cfg.Options), ExternalIDs: maps.Clone(p.cfg.ExternalIDs),
		MAC: ofportMAC(p.ofport).String(),
	}
	if p.ofport < 0 {
		info.MAC, info.Error = "", deviceError(name)
	}
	return info, nil
}

// deviceError is ovs-vswitchd's error for a port whose device is absent.
func deviceError(name string) string {
	return "could not open network device " + name + " (No such device)"
}

// PortOfport returns the port's OpenFlow number. A FailNext("PortOfport", err)
// makes it fail as ovs-vswitchd does when it cannot open the device.
func (f *FakeOVSDB) PortOfport(_ context.Context, name string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("PortOfport"); err != nil {
		f.logf("PortOfport %s: error: %v", name, err)
		return 0, err
	}
	p, ok := f.ports[name]
	if !ok {
		return 0, fmt.Errorf("port %s: %w", name, ovsdb.ErrPortNotFound)
	}
	if p.ofport < 0 {
		return 0, &ovsdb.InterfaceError{Interface: name, Text: deviceError(name)}
	}
	return p.ofport, nil
}

// Dump renders the bridges and their ports, sorted by name.
func (f *FakeOVSDB) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, br := range slices.Sorted(maps.Keys(f.bridges)) {
		fmt.Fprintf(&b, "bridge %s%s\n", br, bridgeText(f.bridges[br]))
		for _, name := range slices.Sorted(maps.Keys(f.ports)) {
			if p := f.ports[name]; p.bridge == br {
				fmt.Fprintf(&b, "  port %s ofport=%d%s\n", name, p.ofport, portText(p.cfg))
			}
		}
	}
	return b.String()
}

// ofportMAC is the MAC the fake gives a port: 02:00:00:00 and the ofport.
func ofportMAC(ofport int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, byte(ofport >> 8), byte(ofport)}
}

func bridgeText(c ovsdb.BridgeConfig) string {
	var b strings.Builder
	if c.DatapathType != "" {
		b.WriteString(" datapath=" + string(c.DatapathType))
	}
	if c.FailMode != "" {
		b.WriteString(" fail_mode=" + c.FailMode)
	}
	if s := sortedMap(c.OtherConfig); s != "" {
		b.WriteString(" other_config=" + s)
	}
	if s := sortedMap(c.ExternalIDs); s != "" {
		b.WriteString(" external_ids=" + s)
	}
	return b.String()
}

func portText(p ovsdb.PortConfig) string {
	var b strings.Builder
	typ := string(p.Type)
	if typ == "" {
		typ = "system"
	}
	b.WriteString(" type=" + typ)
	if p.Tunnel != nil {
		fmt.Fprintf(&b, " tunnel=%+v", *p.Tunnel)
	}
	if s := sortedMap(p.Options); s != "" {
		b.WriteString(" options=" + s)
	}
	if p.MTURequest != 0 {
		fmt.Fprintf(&b, " mtu_request=%d", p.MTURequest)
	}
	if p.OFPortRequest != 0 {
		fmt.Fprintf(&b, " ofport_request=%d", p.OFPortRequest)
	}
	if s := sortedMap(p.ExternalIDs); s != "" {
		b.WriteString(" external_ids=" + s)
	}
	return b.String()
}

func or[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

func merged(cur, set map[string]string) map[string]string {
	if len(cur) == 0 && len(set) == 0 {
		return nil
	}
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, set)
	return out
}
