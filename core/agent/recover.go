package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/core/ipam"
)

// recoverPods rebuilds the local pods from the OVS ports' external_ids and
// IPAM after a restart. A port without an IPAM allocation (or with other
// addresses) is deleted with its interface; an allocation without a port is
// released. The flows of the kept pods are replayed with the node's flows.
func (a *Agent) recoverPods(ctx context.Context) error {
	ports, err := a.db.ListPorts(ctx, map[string]string{extType: extTypePod})
	if err != nil {
		return fmt.Errorf("list pod ports: %w", err)
	}
	var keep []ipam.Key
	pods := map[ipam.Key]*podState{}
	for _, port := range ports {
		ref := refFromExternalIDs(port.ExternalIDs)
		key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
		p, why := a.recoverPod(ctx, port.Name, port.OFPort, port.ExternalIDs)
		if p == nil {
			a.log.Warn("dropping an inconsistent pod port", "port", port.Name, "pod", ref.Namespace+"/"+ref.Name, "reason", why)
			if err := a.db.DeletePort(ctx, port.Name); err != nil {
				return fmt.Errorf("delete port %s: %w", port.Name, err)
			}
			if ref.Namespace != "" && ref.Name != "" && ref.ContainerID != "" && ref.IfName != "" {
				if err := a.backend.Detach(ctx, ref); err != nil {
					a.log.Warn("detach a dropped pod", "port", port.Name, "err", err)
				}
			}
			continue
		}
		keep = append(keep, key)
		pods[key] = p
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
	a.log.Info("pods recovered", "pods", len(pods), "released", len(released))
	return nil
}

// recoverPod checks one pod port against IPAM; nil and the reason when it
// cannot be kept.
func (a *Agent) recoverPod(ctx context.Context, name string, ofport int, ids map[string]string) (*podState, string) {
	ref := refFromExternalIDs(ids)
	if ref.Validate() != nil {
		return nil, "incomplete external_ids"
	}
	key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
	al, ok := a.ipam.Lookup(key)
	if !ok {
		return nil, "no IPAM allocation"
	}
	var ips []netip.Prefix
	for _, s := range strings.Split(ids[extIP], ",") {
		if p, err := netip.ParsePrefix(s); err == nil {
			ips = append(ips, p)
		}
	}
	if !slices.Equal(ips, al.IPs) {
		return nil, fmt.Sprintf("port has %v, IPAM %v", ips, al.IPs)
	}
	mac, err := net.ParseMAC(ids[extMAC])
	if err != nil {
		return nil, "bad MAC"
	}
	if ofport <= 0 {
		n, err := a.db.PortOfport(ctx, name)
		if err != nil {
			return nil, fmt.Sprintf("no OpenFlow port: %v", err)
		}
		ofport = n
	}
	return &podState{key: key, ref: ref, port: name, ofport: uint32(ofport), ips: ips, mac: mac}, ""
}
