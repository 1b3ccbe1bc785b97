package agent

import (
	"context"
	"fmt"
	"github.com/seine-cni/seine/core/hostport"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/core/ipam"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// recoverPods rebuilds the local pods from the OVS ports' external_ids and
// IPAM after a restart. A port without an IPAM allocation (or with other
// addresses) is deleted with its interface; so is one without an OpenFlow
// port whose interface is not intact. A port without an OpenFlow port whose
// interface is intact and comes late (platform.LatePodInterfaces: a Windows
// pod before its sandbox started) is kept, with its address, and connected
// in the background. An allocation without a port is released. The flows of
// the kept pods are replayed with the node's flows.
func (a *Agent) recoverPods(ctx context.Context) error {
	ports, err := a.db.ListPorts(ctx, map[string]string{extType: extTypePod})
	if err != nil {
		return fmt.Errorf("list pod ports: %w", err)
	}
	var keep []ipam.Key
	pods := map[ipam.Key]*podState{}
	type waiting struct {
		p     *podState
		iface platform.PodInterface
	}
	var late []waiting
	for _, port := range ports {
		ref := refFromExternalIDs(port.ExternalIDs)
		key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
		p, lateIface, why := a.recoverPod(ctx, port.Name, port.OFPort, port.ExternalIDs)
		if p != nil && lateIface != nil {
			keep = append(keep, key)
			late = append(late, waiting{p, *lateIface})
			continue
		}
		if p == nil {
			a.log.Warn("dropping an inconsistent pod port", "port", port.Name, "pod", ref.Namespace+"/"+ref.Name, "reason", why)
			if err := a.db.DeletePort(ctx, port.Name); err != nil {
				return fmt.Errorf("delete port %s: %w", port.Name, err)
			}
			if ref.Namespace != "" && ref.Name != "" && ref.ContainerID != "" && ref.IfName != "" {
				vf, _ := vfFromExternalIDs(port.ExternalIDs)
				if err := a.detachInterface(ctx, ref, vf); err != nil {
					a.log.Warn("detach a dropped pod", "port", port.Name, "err", err)
				}
			}
			continue
		}
		keep = append(keep, key)
		pods[key] = p
	}
	// Allocations without a port: a crash between IPAM and OVSDB in an ADD,
	// a pod whose DEL was missed, or an OVS database recreated (or wiped)
	// while the pods kept running. A pod whose interface is intact is
	// plugged again, as a retried ADD would; only the others are released.
	for _, al := range a.ipam.List() {
		if slices.Contains(keep, al.Key) {
			continue
		}
		p, lateIface, live, why := a.replug(ctx, al)
		switch {
		case p == nil && live:
			a.log.Error("a running pod without an OVS port could not be plugged again; its address stays allocated", "pod", al.PodNamespace+"/"+al.PodName, "err", why)
			keep = append(keep, al.Key)
			continue
		case p == nil:
			a.log.Info("an address without an OVS port is released", "pod", al.PodNamespace+"/"+al.PodName, "reason", why)
			continue
		}
		a.log.Warn("pod without an OVS port plugged again", "pod", al.PodNamespace+"/"+al.PodName, "port", p.port, "ips", fmt.Sprint(al.IPs))
		keep = append(keep, al.Key)
		if lateIface != nil {
			late = append(late, waiting{p, *lateIface})
		} else {
			pods[al.Key] = p
		}
	}
	released, err := a.ipam.ReleaseAllExcept(keep)
	if err != nil {
		return fmt.Errorf("release addresses without a port: %w", err)
	}
	for _, al := range released {
		a.log.Warn("released an address without an OVS port", "pod", al.PodNamespace+"/"+al.PodName, "ips", fmt.Sprint(al.IPs))
	}
	a.mu.Lock()
	a.pods = pods
	a.mu.Unlock()
	for _, w := range late {
		lp, err := a.lateBackend()
		if err != nil {
			return err
		}
		a.late.start(w.p, func(ctx context.Context) { a.connectLate(ctx, w.p, w.iface, lp) })
	}
	a.log.Info("pods recovered", "pods", len(pods), "awaiting_interface", len(late), "released", len(released))
	return nil
}

// replug plugs an allocation's pod into OVS again when its interface is
// intact; nil and the reason when it is not (or cannot be told: an
// allocation recorded without its namespace by an older agent). live says
// the interface is intact even though plugging it failed.
func (a *Agent) replug(ctx context.Context, al ipam.Allocation) (p *podState, lateIface *platform.PodInterface, live bool, why string) {
	ref := platform.PodRef{Namespace: al.PodNamespace, Name: al.PodName, ContainerID: al.ContainerID, IfName: al.IfName, NetNS: al.NetNS}
	if al.NetNS == "" || ref.Validate() != nil {
		return nil, nil, false, "no pod namespace recorded"
	}
	pn := a.podNetwork(ref, al.IPs, nil)
	if err := a.backend.Check(ctx, pn); err != nil {
		return nil, nil, false, fmt.Sprintf("the pod's interface is not intact: %v", err)
	}
	p, lateIface, err := a.plugAgain(ctx, al, pn)
	if err != nil {
		return nil, nil, true, err.Error()
	}
	return p, lateIface, true, ""
}

// plugAgain is what a retried ADD does for a pod whose interface exists.
func (a *Agent) plugAgain(ctx context.Context, al ipam.Allocation, pn platform.PodNetwork) (*podState, *platform.PodInterface, error) {
	ref := pn.PodRef
	iface, err := a.backend.Attach(ctx, pn)
	if err != nil {
		return nil, nil, fmt.Errorf("find the pod's interface again: %w", err)
	}
	p := &podState{key: al.Key, ref: ref, port: iface.HostName, ips: al.IPs, mac: iface.MAC}
	typ := iface.PortType
	if iface.Late {
		typ = ovsdb.TypeSystem // the connector gives it its type
	}
	if err := a.db.EnsurePort(ctx, a.cfg.OVS.Bridge, ovsdb.PortConfig{Name: iface.HostName, Type: typ, ExternalIDs: p.externalIDs()}); err != nil {
		return nil, nil, fmt.Errorf("add OVS port %s: %w", iface.HostName, err)
	}
	if iface.Late {
		return p, &iface, nil
	}
	ofport, err := a.db.PortOfport(ctx, iface.HostName)
	if err != nil {
		if derr := a.db.DeletePort(ctx, iface.HostName); derr != nil {
			a.log.Warn("delete a port that got no OpenFlow port", "port", iface.HostName, "err", derr)
		}
		return nil, nil, fmt.Errorf("OVS port %s: %w", iface.HostName, err)
	}
	p.ofport = uint32(ofport)
	return p, nil, nil
}

// recoverPod checks one pod port against IPAM and, when it has no OpenFlow
// port, against the host; nil and the reason when it cannot be kept. A pod
// kept without an OpenFlow port comes with its late interface, for the
// connector.
func (a *Agent) recoverPod(ctx context.Context, name string, ofport int, ids map[string]string) (*podState, *platform.PodInterface, string) {
	ref := refFromExternalIDs(ids)
	if ref.Validate() != nil {
		return nil, nil, "incomplete external_ids"
	}
	key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
	al, ok := a.ipam.Lookup(key)
	if !ok {
		return nil, nil, "no IPAM allocation"
	}
	var ips []netip.Prefix
	for _, s := range strings.Split(ids[extIP], ",") {
		if p, err := netip.ParsePrefix(s); err == nil {
			ips = append(ips, p)
		}
	}
	if !slices.Equal(ips, al.IPs) {
		return nil, nil, fmt.Sprintf("port has %v, IPAM %v", ips, al.IPs)
	}
	mac, err := net.ParseMAC(ids[extMAC])
	if err != nil {
		return nil, nil, "bad MAC"
	}
	vf, err := vfFromExternalIDs(ids)
	if err != nil {
		return nil, nil, err.Error()
	}
	p := &podState{key: key, ref: ref, port: name, ips: ips, mac: mac, vf: vf}
	if p.hostPorts, err = hostport.Decode(ids[extHostPorts]); err != nil {
		a.log.Warn("pod kept without its host ports", "pod", ref.Namespace+"/"+ref.Name, "err", err)
		p.hostPorts = nil
	}
	if err := a.hostPorts.Reserve(key.String(), ref.Namespace+"/"+ref.Name, p.hostPorts); err != nil {
		a.log.Warn("pod kept without its host ports", "pod", ref.Namespace+"/"+ref.Name, "err", err)
		p.hostPorts = nil
	}
	if ofport > 0 {
		p.ofport = uint32(ofport)
		return p, nil, ""
	}
	// No OpenFlow port: normal for a pod whose interface comes late (a
	// Windows pod whose sandbox has not started, or whose port ovs-vswitchd
	// has not opened again), or the pod's interface is gone.
	pn := a.podNetwork(ref, ips, p.vfMAC())
	if err := a.checkInterface(ctx, pn, vf); err != nil {
		return nil, nil, fmt.Sprintf("no OpenFlow port, and the pod's interface is not intact: %v", err)
	}
	if _, ok := a.backend.(platform.LatePodInterfaces); ok && vf == nil {
		// What a retried ADD does: the backend finds the interface as it is.
		iface, err := a.backend.Attach(ctx, pn)
		if err != nil {
			return nil, nil, fmt.Sprintf("no OpenFlow port, and the pod's interface cannot be found again: %v", err)
		}
		if iface.Late {
			return p, &iface, ""
		}
	}
	n, err := a.db.PortOfport(ctx, name)
	if err != nil {
		return nil, nil, fmt.Sprintf("no OpenFlow port: %v", err)
	}
	p.ofport = uint32(n)
	return p, nil, ""
}
