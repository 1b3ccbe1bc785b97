package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/hostport"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/platform"
)

// extHostPorts holds a pod's host ports on its OVS port (hostport.Encode),
// with its other state: a restarted agent maps them again.
const extHostPorts = "host-ports"

// requestHostPorts are the host ports the runtime passes in an ADD
// (runtimeConfig.portMappings: the conflist declares the portMappings
// capability).
func requestHostPorts(r *cni.Request) ([]hostport.Mapping, error) {
	if r.NetConf == nil {
		return nil, nil
	}
	ms, err := hostport.ParseRuntimeConfig(r.NetConf.RuntimeConfig["portMappings"])
	if err != nil {
		return nil, cni.Errorf(types.ErrInvalidNetworkConfig, "%v", err)
	}
	return ms, nil
}

// reserveHostPorts takes the pod's host ports on this node, refusing one
// another pod holds. It returns the undo of a new reservation (nil when
// there is nothing to undo: no host ports, or an ADD again of a pod that
// holds them).
func (a *Agent) reserveHostPorts(p *podState) (func(context.Context) error, error) {
	if len(p.hostPorts) == 0 {
		return nil, nil
	}
	a.mu.Lock()
	had := a.pods[p.key] != nil
	a.mu.Unlock()
	if err := a.hostPorts.Reserve(p.key.String(), p.ref.Namespace+"/"+p.ref.Name, p.hostPorts); err != nil {
		return nil, cni.Errorf(types.ErrInternal, "pod %s/%s: %v", p.ref.Namespace, p.ref.Name, err)
	}
	if had {
		return nil, nil
	}
	return func(ctx context.Context) error {
		a.hostPorts.Release(p.key.String())
		return a.syncHost(ctx)
	}, nil
}

// hostPortsLocked is every local pod's host ports as the host DNATs them
// (a.mu held).
func (a *Agent) hostPortsLocked() []platform.HostPort {
	var out []platform.HostPort
	for _, p := range a.pods {
		ip := p.ipv4()
		if !ip.IsValid() {
			continue
		}
		for _, m := range p.hostPorts {
			out = append(out, platform.HostPort{Protocol: m.Protocol, HostIP: m.HostIP, Port: m.HostPort, PodIP: ip, PodPort: m.PodPort})
		}
	}
	slices.SortFunc(out, func(x, y platform.HostPort) int {
		if c := cmpHostPort(x, y); c != 0 {
			return c
		}
		return x.PodIP.Compare(y.PodIP)
	})
	return out
}

func cmpHostPort(x, y platform.HostPort) int {
	switch {
	case x.Protocol != y.Protocol:
		return int(x.Protocol) - int(y.Protocol)
	case x.Port != y.Port:
		return int(x.Port) - int(y.Port)
	}
	return x.HostIP.Compare(y.HostIP)
}

// flushHostPortsUDP deletes the bridge's conntrack entries of the pod's
// UDP host ports on the node IPs: a pod that sent to one before it was
// mapped was committed as plain traffic, and while it keeps its source
// port (DNS, statsd) its datagrams would follow that entry past the DNAT
// until it idles out. The host's own entries are the backend's
// (SyncNodePorts). A failure is logged: the entries time out.
func (a *Agent) flushHostPortsUDP(ctx context.Context, p *podState) {
	a.mu.Lock()
	var nodeIPs []netip.Addr
	if a.node != nil {
		nodeIPs = a.node.NodeIPs
	}
	a.mu.Unlock()
	for _, m := range p.hostPorts {
		if m.Protocol != hostport.UDP {
			continue
		}
		for _, ip := range nodeIPs {
			if m.HostIP.IsValid() && m.HostIP != ip {
				continue
			}
			orig := fmt.Sprintf("ct_nw_proto=17,ct_nw_dst=%s,ct_tp_dst=%d", ip, m.HostPort)
			if err := (ctFlusher{a}).FlushConntrack(ctx, pipeline.CtZone, orig, ""); err != nil {
				a.log.Warn("stale conntrack entries of a UDP host port not flushed", "pod", p.ref.Namespace+"/"+p.ref.Name, "err", err)
			}
		}
	}
}

// syncPodHostPorts brings the host's DNAT in line once a pod with host
// ports came or went.
func (a *Agent) syncPodHostPorts(ctx context.Context, p *podState) error {
	if len(p.hostPorts) == 0 {
		return nil
	}
	if err := a.syncHost(ctx); err != nil {
		return fmt.Errorf("host ports %s: %w", hostport.Encode(p.hostPorts), err)
	}
	return nil
}
