package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strconv"

	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"
)

// InterfaceType is the OVS interface type of a port.
type InterfaceType string

// Interface types Seine uses.
const (
	TypeSystem   InterfaceType = ""         // an existing network device, opened by name
	TypeInternal InterfaceType = "internal" // a device OVS creates (tap with the netdev datapath)
	TypeGeneve   InterfaceType = "geneve"
	TypeVXLAN    InterfaceType = "vxlan"
	TypeGRE      InterfaceType = "gre"
	TypeSTT      InterfaceType = "stt"
)

// IsTunnel reports whether t is a tunnel type.
func (t InterfaceType) IsTunnel() bool {
	switch t {
	case TypeGeneve, TypeVXLAN, TypeGRE, TypeSTT:
		return true
	}
	return false
}

// TunnelConfig are the options of a tunnel interface.
type TunnelConfig struct {
	// RemoteIP is "flow" (set per packet with tun_dst; the default when empty)
	// or a fixed IP address.
	RemoteIP string
	// Key is "flow" (the VNI/key set per packet with tun_id), a number, or ""
	// for none (OVS then uses 0).
	Key string
	// LocalIP is "", "flow", or a fixed source IP address.
	LocalIP string
	// Csum asks OVS to checksum the outer header (options:csum=true).
	Csum bool
	// DstPort overrides the UDP destination port (geneve, vxlan, stt); 0 keeps
	// OVS's default.
	DstPort uint16
}

// options renders the tunnel as Interface options.
func (t TunnelConfig) options(typ InterfaceType) (map[string]string, error) {
	o := map[string]string{}
	switch t.RemoteIP {
	case "", "flow":
		o["remote_ip"] = "flow"
	default:
		if _, err := netip.ParseAddr(t.RemoteIP); err != nil {
			return nil, fmt.Errorf("remote_ip %q: want flow or an IP address", t.RemoteIP)
		}
		o["remote_ip"] = t.RemoteIP
	}
	switch t.LocalIP {
	case "":
	case "flow":
		o["local_ip"] = "flow"
	default:
		if _, err := netip.ParseAddr(t.LocalIP); err != nil {
			return nil, fmt.Errorf("local_ip %q: want flow or an IP address", t.LocalIP)
		}
		o["local_ip"] = t.LocalIP
	}
	switch t.Key {
	case "":
	case "flow":
		o["key"] = "flow"
	default:
		if _, err := strconv.ParseUint(t.Key, 0, 64); err != nil {
			return nil, fmt.Errorf("key %q: want flow or a number", t.Key)
		}
		o["key"] = t.Key
	}
	if t.Csum {
		o["csum"] = "true"
	}
	if t.DstPort != 0 {
		if typ == TypeGRE {
			return nil, errors.New("dst_port: GRE has no UDP port")
		}
		o["dst_port"] = strconv.Itoa(int(t.DstPort))
	}
	return o, nil
}

// PortConfig is the desired state of a port and its single interface (both
// named Name).
type PortConfig struct {
	Name string
	Type InterfaceType
	// Tunnel is required for tunnel types and refused for others.
	Tunnel *TunnelConfig
	// Options are extra interface options, applied over the tunnel's. The
	// interface's options are replaced by exactly these (plus the tunnel's).
	Options map[string]string
	// ExternalIDs keys are set on the Port row (where Seine records the pod,
	// namespace, container and IP); keys not listed are left alone.
	ExternalIDs map[string]string
	// OFPortRequest asks for a fixed OpenFlow port number (1-65279); 0 lets OVS
	// choose.
	OFPortRequest int
	// MTURequest sets mtu_request; 0 leaves the MTU to OVS.
	MTURequest int
}

// interfaceRow returns the desired Interface row (without UUID) for p.
func (p PortConfig) interfaceRow() (Interface, error) {
	if p.Name == "" {
		return Interface{}, errors.New("port name is empty")
	}
	opts := map[string]string{}
	switch {
	case p.Type.IsTunnel():
		if p.Tunnel == nil {
			return Interface{}, fmt.Errorf("port %s: %s port needs a TunnelConfig", p.Name, p.Type)
		}
		t, err := p.Tunnel.options(p.Type)
		if err != nil {
			return Interface{}, fmt.Errorf("port %s: %w", p.Name, err)
		}
		opts = t
	case p.Tunnel != nil:
		return Interface{}, fmt.Errorf("port %s: tunnel options on a %q port", p.Name, p.Type)
	case p.Type != TypeSystem && p.Type != TypeInternal:
		return Interface{}, fmt.Errorf("port %s: unsupported interface type %q", p.Name, p.Type)
	}
	maps.Copy(opts, p.Options)
	row := Interface{Name: p.Name, Type: string(p.Type), Options: opts}
	if p.OFPortRequest != 0 {
		if p.OFPortRequest < 1 || p.OFPortRequest > 65279 {
			return Interface{}, fmt.Errorf("port %s: ofport_request %d out of range 1-65279", p.Name, p.OFPortRequest)
		}
		row.OFPortRequest = &p.OFPortRequest
	}
	if p.MTURequest != 0 {
		if p.MTURequest < 1 {
			return Interface{}, fmt.Errorf("port %s: mtu_request %d", p.Name, p.MTURequest)
		}
		row.MTURequest = &p.MTURequest
	}
	return row, nil
}

// interfaceChanges lists the Interface columns of cur that differ from want.
func interfaceChanges(cur, want *Interface) []any {
	var fields []any
	if cur.Type != want.Type {
		fields = append(fields, &want.Type)
	}
	if !maps.Equal(cur.Options, want.Options) {
		fields = append(fields, &want.Options)
	}
	if !equalIntPtr(cur.OFPortRequest, want.OFPortRequest) {
		fields = append(fields, &want.OFPortRequest)
	}
	if !equalIntPtr(cur.MTURequest, want.MTURequest) {
		fields = append(fields, &want.MTURequest)
	}
	return fields
}

func equalIntPtr(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// EnsurePort makes port p exist on bridge with its configuration, creating it
// or updating what differs in one transaction; calling it again with the same
// p sends nothing. A port of that name on another bridge is an error.
func (c *Client) EnsurePort(ctx context.Context, bridge string, p PortConfig) error {
	want, err := p.interfaceRow()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		br, err := c.Bridge(ctx, bridge)
		if err != nil {
			return fmt.Errorf("ensure port %s: %w", p.Name, err)
		}
		cur, err := c.port(ctx, p.Name)
		if errors.Is(err, ErrPortNotFound) {
			err = c.createPort(ctx, br, p, want)
			if isConstraintViolation(err) && attempt < 3 {
				c.log.Debug("port created concurrently, retrying", "port", p.Name, "err", err)
				_ = c.waitFor(ctx, "port "+p.Name, func() (bool, error) { _, err := c.port(ctx, p.Name); return err == nil, nil })
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		return c.updatePort(ctx, br, cur, p, want)
	}
}

// AddPort is EnsurePort under the name ovs-vsctl users look for.
func (c *Client) AddPort(ctx context.Context, bridge string, p PortConfig) error {
	return c.EnsurePort(ctx, bridge, p)
}

func (c *Client) createPort(ctx context.Context, br Bridge, p PortConfig, want Interface) error {
	what := fmt.Sprintf("create port %s on bridge %s", p.Name, br.Name)
	want.UUID = "iface"
	port := &Port{UUID: "port", Name: p.Name, Interfaces: []string{want.UUID}, ExternalIDs: p.ExternalIDs}
	ops, err := c.ovs.Create(&want, port)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	b := &Bridge{UUID: br.UUID}
	mut, err := c.ovs.Where(b).Mutate(b, model.Mutation{
		Field: &b.Ports, Mutator: ovsdb.MutateOperationInsert, Value: []string{port.UUID},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, append(ops, mut...)); err != nil {
		return err
	}
	c.log.Info("created port", "bridge", br.Name, "port", p.Name, "type", string(p.Type))
	return c.waitFor(ctx, "port "+p.Name+" in cache", func() (bool, error) {
		info, err := c.GetPort(ctx, p.Name)
		return err == nil && info.Bridge == br.Name, nil
	})
}

func (c *Client) updatePort(ctx context.Context, br Bridge, cur Port, p PortConfig, want Interface) error {
	what := fmt.Sprintf("update port %s on bridge %s", p.Name, br.Name)
	owner, err := c.portBridge(ctx, cur.UUID)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if owner != "" && owner != br.Name {
		return fmt.Errorf("%s: the port is on bridge %s", what, owner)
	}
	if len(cur.Interfaces) != 1 {
		return fmt.Errorf("%s: port has %d interfaces, want 1", what, len(cur.Interfaces))
	}
	iface := Interface{UUID: cur.Interfaces[0]}
	if err := c.ovs.Get(ctx, &iface); err != nil {
		return fmt.Errorf("%s: interface %s: %w", what, cur.Interfaces[0], err)
	}
	var ops []ovsdb.Operation
	want.UUID = iface.UUID
	if fields := interfaceChanges(&iface, &want); len(fields) > 0 {
		upd, err := c.ovs.Where(&Interface{UUID: iface.UUID}).Update(&want, fields...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ops = append(ops, upd...)
	}
	if set := changedKeys(cur.ExternalIDs, p.ExternalIDs); len(set) > 0 {
		m := &Port{UUID: cur.UUID}
		mut, err := c.ovs.Where(m).Mutate(m, mapSetMutations(&m.ExternalIDs, set)...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ops = append(ops, mut...)
	}
	if owner == "" { // the port row exists but no bridge holds it (yet)
		b := &Bridge{UUID: br.UUID}
		mut, err := c.ovs.Where(b).Mutate(b, model.Mutation{
			Field: &b.Ports, Mutator: ovsdb.MutateOperationInsert, Value: []string{cur.UUID},
		})
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ops = append(ops, mut...)
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := c.transact(ctx, what, ops); err != nil {
		return err
	}
	c.log.Info("updated port", "bridge", br.Name, "port", p.Name)
	return c.waitFor(ctx, what+" in cache", func() (bool, error) {
		info, err := c.GetPort(ctx, p.Name)
		if err != nil {
			return false, nil
		}
		got := Interface{Type: string(info.Type), Options: info.Options, OFPortRequest: info.ofportRequest, MTURequest: info.mtuRequest}
		return info.Bridge == br.Name && len(interfaceChanges(&got, &want)) == 0 && mapHasAll(info.ExternalIDs, p.ExternalIDs), nil
	})
}

// DeletePort removes the named port from whichever bridge holds it; an absent
// port is not an error.
func (c *Client) DeletePort(ctx context.Context, name string) error {
	p, err := c.port(ctx, name)
	if errors.Is(err, ErrPortNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	what := "delete port " + name
	owner, err := c.portBridge(ctx, p.UUID)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if owner == "" {
		return nil // unreferenced: OVSDB garbage-collects it
	}
	br, err := c.Bridge(ctx, owner)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	// Port is not a root table: removing the bridge's reference deletes it and
	// its interface.
	b := &Bridge{UUID: br.UUID}
	ops, err := c.ovs.Where(b).Mutate(b, model.Mutation{
		Field: &b.Ports, Mutator: ovsdb.MutateOperationDelete, Value: []string{p.UUID},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, ops); err != nil {
		return err
	}
	c.log.Info("deleted port", "bridge", owner, "port", name)
	return c.waitFor(ctx, "port "+name+" gone from cache", func() (bool, error) {
		_, err := c.port(ctx, name)
		return errors.Is(err, ErrPortNotFound), nil
	})
}

// InterfaceError is returned by PortOfport when ovs-vswitchd could not add the
// interface (ofport -1); Text is OVS's error column.
type InterfaceError struct {
	Interface string
	Text      string
}

func (e *InterfaceError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("interface %s: ovs-vswitchd could not add it (ofport -1)", e.Interface)
	}
	return fmt.Sprintf("interface %s: ovs-vswitchd could not add it: %s", e.Interface, e.Text)
}

// PortOfport waits until ovs-vswitchd has assigned an OpenFlow port number to
// the named port's interface and returns it. It fails with *InterfaceError
// when OVS reports ofport -1, with ErrPortNotFound when there is no such port,
// and otherwise waits as long as ctx allows.
func (c *Client) PortOfport(ctx context.Context, name string) (int, error) {
	var ofport int
	err := c.waitFor(ctx, "ofport of "+name, func() (bool, error) {
		info, err := c.GetPort(ctx, name)
		if err != nil {
			return false, err
		}
		switch {
		case info.OFPort > 0:
			ofport = info.OFPort
			return true, nil
		case info.OFPort == -1:
			return false, &InterfaceError{Interface: name, Text: info.Error}
		}
		return false, nil
	})
	return ofport, err
}

// PortInfo is a port, its single interface and its bridge, as cached.
type PortInfo struct {
	Name   string
	Bridge string // "" if no bridge references the port
	Type   InterfaceType
	// OFPort is the OpenFlow port number: 0 while unassigned, -1 on failure.
	OFPort      int
	Options     map[string]string
	ExternalIDs map[string]string // of the Port row
	Error       string            // the interface's error column
	MAC         string            // mac_in_use

	PortUUID, InterfaceUUID string

	ofportRequest, mtuRequest *int
}

// GetPort returns the named port.
func (c *Client) GetPort(ctx context.Context, name string) (PortInfo, error) {
	p, err := c.port(ctx, name)
	if err != nil {
		return PortInfo{}, err
	}
	owners, err := c.portOwners(ctx)
	if err != nil {
		return PortInfo{}, err
	}
	return c.portInfo(ctx, p, owners)
}

// ListPorts returns the ports whose external_ids contain every entry of match
// (all ports for an empty match), for example to recover pods after a restart.
func (c *Client) ListPorts(ctx context.Context, match map[string]string) ([]PortInfo, error) {
	var ports []Port
	err := c.ovs.WhereCache(func(p *Port) bool { return mapHasAll(p.ExternalIDs, match) }).List(ctx, &ports)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	owners, err := c.portOwners(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PortInfo, 0, len(ports))
	for _, p := range ports {
		info, err := c.portInfo(ctx, p, owners)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

func (c *Client) portInfo(ctx context.Context, p Port, owners map[string]string) (PortInfo, error) {
	info := PortInfo{Name: p.Name, Bridge: owners[p.UUID], ExternalIDs: maps.Clone(p.ExternalIDs), PortUUID: p.UUID}
	if len(p.Interfaces) == 0 {
		return info, nil
	}
	iface := Interface{UUID: p.Interfaces[0]}
	if err := c.ovs.Get(ctx, &iface); err != nil {
		return PortInfo{}, fmt.Errorf("port %s: interface %s: %w", p.Name, p.Interfaces[0], err)
	}
	info.InterfaceUUID = iface.UUID
	info.Type = InterfaceType(iface.Type)
	info.Options = maps.Clone(iface.Options)
	if iface.OFPort != nil {
		info.OFPort = *iface.OFPort
	}
	if iface.Error != nil {
		info.Error = *iface.Error
	}
	if iface.MACInUse != nil {
		info.MAC = *iface.MACInUse
	}
	info.ofportRequest, info.mtuRequest = iface.OFPortRequest, iface.MTURequest
	return info, nil
}

func (c *Client) port(ctx context.Context, name string) (Port, error) {
	p := Port{Name: name}
	err := c.ovs.Get(ctx, &p)
	if errors.Is(err, client.ErrNotFound) {
		return Port{}, fmt.Errorf("port %s: %w", name, ErrPortNotFound)
	}
	if err != nil {
		return Port{}, fmt.Errorf("port %s: %w", name, err)
	}
	return p, nil
}

// portOwners maps port UUIDs to the name of the bridge holding them.
func (c *Client) portOwners(ctx context.Context) (map[string]string, error) {
	brs, err := c.Bridges(ctx)
	if err != nil {
		return nil, err
	}
	owners := map[string]string{}
	for _, b := range brs {
		for _, p := range b.Ports {
			owners[p] = b.Name
		}
	}
	return owners, nil
}

func (c *Client) portBridge(ctx context.Context, portUUID string) (string, error) {
	owners, err := c.portOwners(ctx)
	if err != nil {
		return "", err
	}
	return owners[portUUID], nil
}
