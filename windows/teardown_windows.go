package windows

import (
	"context"
	"errors"
	"fmt"

	"github.com/seine-cni/seine/platform"
)

var _ platform.NodeTeardown = (*Backend)(nil)

// Teardown undoes Setup for `seine-agent uninstall` (platform.NodeTeardown):
// the node's addresses and gateway routes move back from the bridge's port
// to the host vNIC, the uplink and gateway ports leave the bridge, and the
// HNS network is deleted, which gives the uplink its configuration back.
// The bridge stays (the core owns it). Calling it again finds nothing to do.
func (b *Backend) Teardown(ctx context.Context, cfg platform.NodeConfig) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if b.ovs == nil {
		return errors.New("node teardown: the backend has no OVSDB client")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.teardown(ctx, cfg); err != nil {
		return fmt.Errorf("node teardown: %w", err)
	}
	return nil
}

func (b *Backend) teardown(ctx context.Context, cfg platform.NodeConfig) error {
	ifs, err := b.stack.Interfaces(ctx)
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	routes, err := b.stack.Routes(ctx)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	host, onBridge := findInterface(ifs, cfg.Bridge)
	back, ok := findInterface(ifs, hostVNICName(cfg.Uplink))
	if !ok {
		back, ok = findInterface(ifs, cfg.Uplink)
	}
	if onBridge && len(host.IPs) > 0 {
		if !ok {
			return fmt.Errorf("neither %q nor %q exists to take the node's addresses back", hostVNICName(cfg.Uplink), cfg.Uplink)
		}
		if err := b.moveNode(ctx, host, back, gatewayRoutes(routes, host.Index)); err != nil {
			return err
		}
		if err := b.recordNode(ctx, cfg.Bridge, nil, nil); err != nil {
			return err
		}
	}
	for _, name := range []string{cfg.Uplink, cfg.Gateway} {
		if err := b.ovs.DeletePort(ctx, name); err != nil {
			return err
		}
	}
	n, err := b.hns.NetworkByName(ctx, NetworkName)
	if err != nil {
		return fmt.Errorf("find HNS network %s: %w", NetworkName, err)
	}
	if n != nil {
		if err := b.hns.DeleteNetwork(ctx, n.Id); err != nil {
			return fmt.Errorf("delete HNS network %s: %w", NetworkName, err)
		}
	}
	b.node.Lock()
	b.node.networkID = ""
	b.node.Unlock()
	return nil
}
