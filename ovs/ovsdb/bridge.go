package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"
)

// DatapathType selects the OVS datapath of a bridge.
type DatapathType string

const (
	// DatapathSystem is the kernel datapath (OVS's "" and "system").
	DatapathSystem DatapathType = "system"
	// DatapathNetdev is the userspace datapath (no kernel module needed).
	DatapathNetdev DatapathType = "netdev"
)

// BridgeConfig is the desired state of a bridge.
type BridgeConfig struct {
	Name string
	// DatapathType is "system" (the default when empty) or "netdev".
	DatapathType DatapathType
	// FailMode is "secure" (the default when empty: no flows until the agent
	// installs them) or "standalone".
	FailMode string
	// Protocols are the OpenFlow versions the bridge accepts; nil means
	// [OpenFlow15], the version Seine's OpenFlow library speaks.
	Protocols []string
	// OtherConfig keys are set (e.g. "hwaddr", "datapath-id"); keys not listed
	// are left alone.
	OtherConfig map[string]string
	// ExternalIDs keys are set; keys not listed are left alone.
	ExternalIDs map[string]string
}

func (cfg BridgeConfig) normalized() (BridgeConfig, error) {
	if cfg.Name == "" {
		return cfg, errors.New("bridge name is empty")
	}
	switch cfg.DatapathType {
	case "":
		cfg.DatapathType = DatapathSystem
	case DatapathSystem, DatapathNetdev:
	default:
		return cfg, fmt.Errorf("bridge %s: datapath type %q: want system or netdev", cfg.Name, cfg.DatapathType)
	}
	switch cfg.FailMode {
	case "":
		cfg.FailMode = defaultFailMode
	case "secure", "standalone":
	default:
		return cfg, fmt.Errorf("bridge %s: fail mode %q: want secure or standalone", cfg.Name, cfg.FailMode)
	}
	if len(cfg.Protocols) == 0 {
		cfg.Protocols = []string{defaultProtocol}
	}
	cfg.Protocols = slices.Sorted(slices.Values(cfg.Protocols))
	return cfg, nil
}

// EnsureBridge makes the bridge exist with cfg: it creates it (with its local
// internal port, as ovs-vsctl add-br does) or updates what differs, in one
// transaction. Calling it again with the same cfg sends nothing.
func (c *Client) EnsureBridge(ctx context.Context, cfg BridgeConfig) error {
	cfg, err := cfg.normalized()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		br, err := c.Bridge(ctx, cfg.Name)
		if errors.Is(err, ErrBridgeNotFound) {
			err = c.createBridge(ctx, cfg)
			if isConstraintViolation(err) && attempt < 3 {
				// Someone created it (or a port of that name) first; look again.
				c.log.Debug("bridge created concurrently, retrying", "bridge", cfg.Name, "err", err)
				_ = c.waitFor(ctx, "bridge "+cfg.Name, func() (bool, error) { return c.hasBridge(ctx, cfg.Name), nil })
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		return c.updateBridge(ctx, br, cfg)
	}
}

func (c *Client) createBridge(ctx context.Context, cfg BridgeConfig) error {
	what := "create bridge " + cfg.Name
	root, err := c.root(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	dpType := string(cfg.DatapathType)
	failMode := cfg.FailMode
	iface := &Interface{UUID: "iface", Name: cfg.Name, Type: interfaceTypeInner}
	port := &Port{UUID: "port", Name: cfg.Name, Interfaces: []string{iface.UUID}}
	br := &Bridge{
		UUID:         "bridge",
		Name:         cfg.Name,
		DatapathType: dpType,
		FailMode:     &failMode,
		Protocols:    cfg.Protocols,
		Ports:        []string{port.UUID},
		OtherConfig:  cfg.OtherConfig,
		ExternalIDs:  cfg.ExternalIDs,
	}
	ops, err := c.ovs.Create(iface, port, br)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	mut, err := c.ovs.Where(root).Mutate(root, model.Mutation{
		Field: &root.Bridges, Mutator: ovsdb.MutateOperationInsert, Value: []string{br.UUID},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, append(ops, mut...)); err != nil {
		return err
	}
	c.log.Info("created bridge", "bridge", cfg.Name, "datapath", dpType)
	return c.waitFor(ctx, "bridge "+cfg.Name+" in cache", func() (bool, error) {
		return c.hasBridge(ctx, cfg.Name), nil
	})
}

// bridgeChanges is what differs between a bridge row and its desired state.
type bridgeChanges struct {
	datapathType, failMode, protocols bool
	otherConfig, externalIDs          map[string]string // keys to set
}

// diffBridge compares br with the normalized cfg.
func diffBridge(br Bridge, cfg BridgeConfig) bridgeChanges {
	curDP := br.DatapathType
	if curDP == "" {
		curDP = string(DatapathSystem)
	}
	return bridgeChanges{
		datapathType: curDP != string(cfg.DatapathType),
		failMode:     br.FailMode == nil || *br.FailMode != cfg.FailMode,
		protocols:    !slices.Equal(slices.Sorted(slices.Values(br.Protocols)), cfg.Protocols),
		otherConfig:  changedKeys(br.OtherConfig, cfg.OtherConfig),
		externalIDs:  changedKeys(br.ExternalIDs, cfg.ExternalIDs),
	}
}

func (ch bridgeChanges) empty() bool {
	return !ch.datapathType && !ch.failMode && !ch.protocols && len(ch.otherConfig) == 0 && len(ch.externalIDs) == 0
}

func (c *Client) updateBridge(ctx context.Context, br Bridge, cfg BridgeConfig) error {
	ch := diffBridge(br, cfg)
	if ch.empty() {
		return nil
	}
	what := "update bridge " + cfg.Name
	want := Bridge{UUID: br.UUID, DatapathType: string(cfg.DatapathType), FailMode: &cfg.FailMode, Protocols: cfg.Protocols}
	var fields []any
	if ch.datapathType {
		fields = append(fields, &want.DatapathType)
	}
	if ch.failMode {
		fields = append(fields, &want.FailMode)
	}
	if ch.protocols {
		fields = append(fields, &want.Protocols)
	}
	var ops []ovsdb.Operation
	sel := c.ovs.Where(&Bridge{UUID: br.UUID})
	if len(fields) > 0 {
		upd, err := sel.Update(&want, fields...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ops = append(ops, upd...)
	}
	muts := append(mapSetMutations(&want.OtherConfig, ch.otherConfig), mapSetMutations(&want.ExternalIDs, ch.externalIDs)...)
	if len(muts) > 0 {
		m, err := sel.Mutate(&want, muts...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		ops = append(ops, m...)
	}
	if _, err := c.transact(ctx, what, ops); err != nil {
		return err
	}
	c.log.Info("updated bridge", "bridge", cfg.Name)
	return c.waitFor(ctx, "bridge "+cfg.Name+" update in cache", func() (bool, error) {
		cur, err := c.Bridge(ctx, cfg.Name)
		if err != nil {
			return false, err
		}
		return diffBridge(cur, cfg).empty(), nil
	})
}

// DeleteBridge removes the bridge with all its ports; an absent bridge is not
// an error.
func (c *Client) DeleteBridge(ctx context.Context, name string) error {
	br, err := c.Bridge(ctx, name)
	if errors.Is(err, ErrBridgeNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	what := "delete bridge " + name
	root, err := c.root(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	// Bridge, Port and Interface are not root tables: dropping the root's
	// reference garbage-collects the bridge, and with it its ports and interfaces.
	ops, err := c.ovs.Where(root).Mutate(root, model.Mutation{
		Field: &root.Bridges, Mutator: ovsdb.MutateOperationDelete, Value: []string{br.UUID},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.transact(ctx, what, ops); err != nil {
		return err
	}
	c.log.Info("deleted bridge", "bridge", name)
	return c.waitFor(ctx, "bridge "+name+" gone from cache", func() (bool, error) {
		return !c.hasBridge(ctx, name), nil
	})
}

// Bridge returns the cached row of the named bridge.
func (c *Client) Bridge(ctx context.Context, name string) (Bridge, error) {
	br := Bridge{Name: name}
	err := c.ovs.Get(ctx, &br)
	if errors.Is(err, client.ErrNotFound) {
		return Bridge{}, fmt.Errorf("bridge %s: %w", name, ErrBridgeNotFound)
	}
	if err != nil {
		return Bridge{}, fmt.Errorf("bridge %s: %w", name, err)
	}
	return br, nil
}

// Bridges returns the cached rows of all bridges.
func (c *Client) Bridges(ctx context.Context) ([]Bridge, error) {
	var brs []Bridge
	if err := c.ovs.List(ctx, &brs); err != nil {
		return nil, fmt.Errorf("list bridges: %w", err)
	}
	return brs, nil
}

func (c *Client) hasBridge(ctx context.Context, name string) bool {
	_, err := c.Bridge(ctx, name)
	return err == nil
}
