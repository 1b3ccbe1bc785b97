package windows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/Microsoft/hcsshim/hcn"
)

// hostVNICName is the alias Windows gives the host's virtual NIC on the
// vSwitch of a Transparent HNS network on uplink; the node's addresses move
// there when the network is created.
func hostVNICName(uplink string) string { return "vEthernet (" + uplink + ")" }

// networkRequest builds the Transparent HNS network on the uplink adapter:
// one static subnet per node address family, with the default route of that
// family when the node has one, so HNS keeps the node's configuration on the
// host vNIC it creates. The network is persistent (no EnableNonPersistent
// flag); Setup verifies it on every start and recreates it when wrong.
func networkRequest(uplink string, nodeIPs []netip.Prefix, routes []ipRoute) *hcn.HostComputeNetwork {
	var subnets []hcn.Subnet
	for _, ip := range nodeIPs {
		s := hcn.Subnet{IpAddressPrefix: ip.Masked().String()}
		for _, r := range routes {
			if r.Dst.Bits() == 0 && r.Dst.Addr().Is6() == ip.Addr().Is6() && !r.onLink() {
				s.Routes = append(s.Routes, hcn.Route{NextHop: r.NextHop.String(), DestinationPrefix: r.Dst.String()})
				break
			}
		}
		subnets = append(subnets, s)
	}
	adapter, _ := json.Marshal(hcn.NetAdapterNameNetworkPolicySetting{NetworkAdapterName: uplink})
	return &hcn.HostComputeNetwork{
		Name:          NetworkName,
		Type:          hcn.Transparent,
		Policies:      []hcn.NetworkPolicy{{Type: hcn.NetAdapterName, Settings: adapter}},
		Ipams:         []hcn.Ipam{{Type: "Static", Subnets: subnets}},
		SchemaVersion: hcn.SchemaVersion{Major: 2, Minor: 0},
	}
}

// networkProblems lists how an existing network differs from what Seine
// needs: Transparent, on the uplink adapter.
func networkProblems(n *hcn.HostComputeNetwork, uplink string) []string {
	var p []string
	if n.Type != hcn.Transparent {
		p = append(p, fmt.Sprintf("type %s, want %s", n.Type, hcn.Transparent))
	}
	if a := networkAdapter(n); !strings.EqualFold(a, uplink) {
		p = append(p, fmt.Sprintf("adapter %q, want %q", a, uplink))
	}
	return p
}

// networkAdapter returns the adapter name of the network's NetAdapterName
// policy, or "".
func networkAdapter(n *hcn.HostComputeNetwork) string {
	for _, pol := range n.Policies {
		if pol.Type != hcn.NetAdapterName {
			continue
		}
		var s hcn.NetAdapterNameNetworkPolicySetting
		if json.Unmarshal(pol.Settings, &s) == nil {
			return s.NetworkAdapterName
		}
	}
	return ""
}

// ensureNetwork finds Seine's HNS network by name and returns it when it is
// right; a wrong one (another type, another adapter) is deleted with its
// endpoints and created anew.
func (b *Backend) ensureNetwork(ctx context.Context, uplink string, nodeIPs []netip.Prefix, routes []ipRoute) (*hcn.HostComputeNetwork, error) {
	n, err := b.hns.NetworkByName(ctx, NetworkName)
	if err != nil {
		return nil, fmt.Errorf("find HNS network %s: %w", NetworkName, err)
	}
	if n != nil {
		problems := networkProblems(n, uplink)
		if len(problems) == 0 {
			return n, nil
		}
		b.log.Warn("recreating HNS network", "network", NetworkName, "id", n.Id, "problems", strings.Join(problems, "; "))
		if err := b.hns.DeleteNetwork(ctx, n.Id); err != nil {
			return nil, fmt.Errorf("delete HNS network %s (%s): %w", NetworkName, strings.Join(problems, "; "), err)
		}
	}
	n, err = b.hns.CreateNetwork(ctx, networkRequest(uplink, nodeIPs, routes))
	if err != nil {
		return nil, fmt.Errorf("create HNS network %s on %s: %w", NetworkName, uplink, err)
	}
	b.log.Info("created HNS network", "network", NetworkName, "id", n.Id, "adapter", uplink)
	return n, nil
}

// ensureExtension enables the OVS extension on the network's vSwitch.
func (b *Backend) ensureExtension(ctx context.Context, networkID string) error {
	on, err := b.vswt.ExtensionEnabled(ctx, networkID, OVSExtensionID)
	if err != nil {
		return fmt.Errorf("OVS extension on HNS network %s: %w", networkID, err)
	}
	if on {
		return nil
	}
	if err := b.vswt.EnableExtension(ctx, networkID, OVSExtensionID); err != nil {
		return fmt.Errorf("enable the OVS extension on HNS network %s: %w", networkID, err)
	}
	b.log.Info("enabled the OVS extension", "network", networkID)
	return nil
}

// errNoNodeAddress: no interface Setup looks at holds the node's addresses.
var errNoNodeAddress = errors.New("no node address")

// nodeAddressHolder returns the first of names that holds global addresses:
// the bridge's port once Setup moved them, the host vNIC after HNS created
// the network, the uplink before that.
func nodeAddressHolder(ifs []ipInterface, names ...string) (ipInterface, error) {
	for _, name := range names {
		if i, ok := findInterface(ifs, name); ok && len(i.IPs) > 0 {
			return i, nil
		}
	}
	return ipInterface{}, fmt.Errorf("%w on any of %s", errNoNodeAddress, strings.Join(quoted(names), ", "))
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// gatewayRoutes returns the routes through a next hop on the interface that
// are not Seine's: what moves with the node's addresses. Connected routes
// are the stack's own and follow the addresses by themselves.
func gatewayRoutes(routes []ipRoute, ifIndex uint32) []ipRoute {
	var out []ipRoute
	for _, r := range routes {
		if r.IfIndex == ifIndex && !r.onLink() && r.Metric != RouteMetric {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b ipRoute) int { return strings.Compare(a.key(), b.key()) })
	return out
}
