package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/hostport"
	"github.com/seine-cni/seine/core/ipam"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/sriov"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// External IDs on a pod's OVS port: the source of truth after a restart.
const (
	extType        = "seine-type"
	extTypePod     = "pod"
	extNamespace   = "k8s-pod-namespace"
	extName        = "k8s-pod-name"
	extContainerID = "container-id"
	extIfName      = "ifname"
	extIP          = "ip-address"
	extMAC         = "mac-address"
	extNetNS       = "netns"
)

// podState is one local pod attachment as the agent knows it.
type podState struct {
	key    ipam.Key
	ref    platform.PodRef
	port   string // the OVS port (the host-side interface)
	ofport uint32
	ips    []netip.Prefix
	mac    net.HardwareAddr
	vf     *platform.VF // the pod's SR-IOV VF (vf.go); nil for a veth
	// hostPorts are the pod's host ports (hostports.go).
	hostPorts []hostport.Mapping
}

// ipv4 is the pod's IPv4 address (the zero Addr without one).
func (p *podState) ipv4() netip.Addr {
	for _, ip := range p.ips {
		if ip.Addr().Is4() {
			return ip.Addr()
		}
	}
	return netip.Addr{}
}

func (p *podState) pipelinePod() pipeline.Pod {
	pp := pipeline.Pod{Namespace: p.ref.Namespace, Name: p.ref.Name, Port: p.ofport, MAC: p.mac, HostPorts: p.hostPorts}
	for _, ip := range p.ips {
		pp.IPs = append(pp.IPs, ip.Addr())
	}
	return pp
}

func (p *podState) externalIDs() map[string]string {
	ips := ""
	for i, ip := range p.ips {
		if i > 0 {
			ips += ","
		}
		ips += ip.String()
	}
	ids := map[string]string{
		extType: extTypePod, extNamespace: p.ref.Namespace, extName: p.ref.Name,
		extContainerID: p.ref.ContainerID, extIfName: p.ref.IfName, extNetNS: p.ref.NetNS,
		extIP: ips, extMAC: p.mac.String(),
	}
	if p.vf != nil {
		ids[sriov.ExternalID] = sriov.Encode(*p.vf)
	}
	if len(p.hostPorts) > 0 {
		ids[extHostPorts] = hostport.Encode(p.hostPorts)
	}
	return ids
}

// podNetwork is what the backend is asked to build for the pod.
func (a *Agent) podNetwork(ref platform.PodRef, ips []netip.Prefix, mac net.HardwareAddr) platform.PodNetwork {
	pn := platform.PodNetwork{PodRef: ref, IPs: ips, MTU: a.podMTU, MAC: mac, GatewayMAC: a.nodeState.Gateway.MAC}
	for _, gw := range a.gateways {
		pn.Gateways = append(pn.Gateways, gw.Addr())
	}
	return pn
}

// podRef builds the attachment's reference from a request.
func podRef(r *cni.Request) platform.PodRef {
	return platform.PodRef{
		Namespace: r.K8s.PodNamespace, Name: r.K8s.PodName,
		ContainerID: r.ContainerID, IfName: r.IfName, NetNS: r.Netns,
	}
}

// Add is CNI ADD: IPAM, pod interface, OVS port, flows. Any failure undoes
// every step that was taken.
func (a *Agent) Add(ctx context.Context, r *cni.Request) (_ *current.Result, err error) {
	if ok, why := a.Ready(); !ok {
		return nil, cni.Errorf(types.ErrTryAgainLater, "seine-agent is not ready: %s", why)
	}
	ref := podRef(r)
	if ref.Namespace == "" || ref.Name == "" {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "K8S_POD_NAMESPACE and K8S_POD_NAME are required in CNI_ARGS")
	}
	if err := ref.Validate(); err != nil {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "%v", err)
	}
	if ref.NetNS == "" {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty")
	}
	deviceID, err := requestDeviceID(r)
	if err != nil {
		return nil, err
	}
	hostPorts, err := requestHostPorts(r)
	if err != nil {
		return nil, err
	}
	log := a.log.With("pod", ref.Namespace+"/"+ref.Name, "container", shortID(ref.ContainerID))
	key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}

	var undo []func(context.Context) error
	defer func() {
		if err == nil {
			return
		}
		// Unwind on a context of its own: ctx may be what failed.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unwindTimeout)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](uctx); uerr != nil {
				log.Error("unwinding a failed ADD", "err", uerr)
			}
		}
	}()

	if deviceID != "" {
		// A retried ADD of a pod already on its VF: the VF is no longer on
		// the node, so attaching again would fail and unwind the pod.
		a.mu.Lock()
		cur := a.pods[key]
		a.mu.Unlock()
		if cur != nil && cur.vf != nil && cur.vf.PCIAddress == deviceID {
			if err := a.checkInterface(ctx, a.podNetwork(cur.ref, cur.ips, cur.vfMAC()), cur.vf); err != nil {
				return nil, fmt.Errorf("ADD again for a pod on VF %s, whose interface differs: %w", deviceID, err)
			}
			log.Info("ADD again for a pod on its VF")
			return a.result(cur, platform.PodInterface{HostName: cur.port}), nil
		}
	}
	// The pod's host ports first: a port another pod holds refuses the ADD
	// before anything is taken.
	unreserve, err := a.reserveHostPorts(&podState{key: key, ref: ref, hostPorts: hostPorts})
	if err != nil {
		return nil, err
	}
	if unreserve != nil {
		undo = append(undo, unreserve)
	}
	alloc, err := a.ipam.Allocate(ipam.Owner{Key: key, PodNamespace: ref.Namespace, PodName: ref.Name, NetNS: ref.NetNS})
	if err != nil {
		if errors.Is(err, ipam.ErrExhausted) {
			return nil, cni.Errorf(types.ErrInternal, "allocate an IP for %s/%s: %v", ref.Namespace, ref.Name, err)
		}
		return nil, fmt.Errorf("allocate an IP: %w", err)
	}
	undo = append(undo, func(context.Context) error { return a.ipam.Release(key) })

	pn := a.podNetwork(ref, alloc.IPs, nil)
	var iface platform.PodInterface
	if deviceID != "" {
		iface, err = a.attachVF(ctx, pn, deviceID)
		if err != nil {
			return nil, err
		}
	} else {
		iface, err = a.backend.Attach(ctx, pn)
		if errors.Is(err, platform.ErrNoNetNS) {
			return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "network namespace %s: %v", ref.NetNS, err)
		}
		if err != nil {
			return nil, fmt.Errorf("attach pod interface: %w", err)
		}
	}
	undo = append(undo, func(ctx context.Context) error { return a.detachInterface(ctx, ref, iface.VF) })

	p := &podState{key: key, ref: ref, port: iface.HostName, ips: alloc.IPs, mac: iface.MAC, vf: iface.VF, hostPorts: hostPorts}
	if iface.Late {
		return a.addLate(ctx, p, iface, &undo)
	}
	if err := a.db.EnsurePort(ctx, a.cfg.OVS.Bridge, ovsdb.PortConfig{
		Name: iface.HostName, Type: iface.PortType, ExternalIDs: p.externalIDs(),
	}); err != nil {
		return nil, fmt.Errorf("add OVS port %s: %w", iface.HostName, err)
	}
	undo = append(undo, func(ctx context.Context) error { return a.db.DeletePort(ctx, iface.HostName) })

	ofport, err := a.db.PortOfport(ctx, iface.HostName)
	if err != nil {
		return nil, fmt.Errorf("OVS port %s: %w", iface.HostName, err)
	}
	p.ofport = uint32(ofport)

	if err := a.installPodFlows(ctx, p); err != nil {
		return nil, err
	}
	undo = append(undo, func(ctx context.Context) error { return a.removePodFlows(ctx, p, false) })
	// The host's DNAT of its own connections to the pod's host ports
	// before the runtime starts the pod's containers.
	if err := a.syncPodHostPorts(ctx, p); err != nil {
		return nil, err
	}
	a.flushHostPortsUDP(ctx, p)
	// Policy for the new pod before the runtime starts its containers.
	// Concurrent ADDs share this recomputation; a failure is retried by
	// the policy controller.
	if err := a.policy.PodsChanged(ctx); err != nil {
		log.Error("policy flows for the new pod not installed yet; retrying", "err", err)
	}
	if iface.VF != nil {
		log.Info("pod added on an SR-IOV VF", "ips", fmt.Sprint(alloc.IPs), "port", iface.HostName, "ofport", ofport, "vf", iface.VF.String())
		return a.result(p, iface), nil
	}
	log.Info("pod added", "ips", fmt.Sprint(alloc.IPs), "port", iface.HostName, "ofport", ofport)
	return a.result(p, iface), nil
}

// addLate finishes the ADD of a pod whose interface appears only after ADD
// returns (see late.go): the port is plugged without its type and a
// connector installs the flows once the interface exists.
func (a *Agent) addLate(ctx context.Context, p *podState, iface platform.PodInterface, undo *[]func(context.Context) error) (*current.Result, error) {
	log := a.log.With("pod", p.ref.Namespace+"/"+p.ref.Name, "container", shortID(p.ref.ContainerID))
	if a.late.pending(p.key) != nil {
		log.Info("ADD again while the pod's interface is awaited")
		return a.result(p, iface), nil
	}
	a.mu.Lock()
	cur := a.pods[p.key]
	a.mu.Unlock()
	if cur != nil && cur.port == iface.HostName && cur.ofport > 0 {
		log.Info("ADD again for a connected pod")
		return a.result(cur, iface), nil
	}
	u, err := a.plugLate(ctx, p, iface)
	if err != nil {
		return nil, err
	}
	*undo = append(*undo, u)
	log.Info("pod added; its port connects when the runtime starts the sandbox", "ips", fmt.Sprint(p.ips), "port", iface.HostName)
	return a.result(p, iface), nil
}

const (
	unwindTimeout     = 30 * time.Second
	flowDeleteTimeout = 5 * time.Second
)

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// result is the CNI 1.1.0 result of an ADD.
func (a *Agent) result(p *podState, iface platform.PodInterface) *current.Result {
	res := &current.Result{
		CNIVersion: cni.ResultVersion,
		Interfaces: []*current.Interface{
			{Name: iface.HostName, Mac: iface.HostMAC.String()},
			{Name: p.ref.IfName, Mac: p.mac.String(), Sandbox: p.ref.NetNS, Mtu: a.podMTU},
		},
	}
	for _, ip := range p.ips {
		cfg := &current.IPConfig{Interface: current.Int(1), Address: net.IPNet{IP: ip.Addr().AsSlice(), Mask: net.CIDRMask(ip.Bits(), ip.Addr().BitLen())}}
		for _, gw := range a.gateways {
			if gw.Addr().Is4() == ip.Addr().Is4() {
				cfg.Gateway = gw.Addr().AsSlice()
				dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
				if !ip.Addr().Is4() {
					dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
				}
				res.Routes = append(res.Routes, &types.Route{Dst: dst, GW: cfg.Gateway})
			}
		}
		res.IPs = append(res.IPs, cfg)
	}
	return res
}

// Del is CNI DEL: it frees whatever the attachment still holds (flows, OVS
// port, interface, IP) and succeeds when nothing is left.
func (a *Agent) Del(ctx context.Context, r *cni.Request) error {
	ref := podRef(r)
	if ref.ContainerID == "" || ref.IfName == "" {
		return cni.Errorf(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID and CNI_IFNAME are required")
	}
	// A DEL carries the ADD's configuration: its device ID finds a VF
	// whose record was lost (a crash between attaching it and storing it).
	deviceID, _ := requestDeviceID(r)
	return a.deletePod(ctx, ref, deviceID)
}

// deletePod tears one attachment down, finding what it holds in the agent's
// state, in OVSDB external_ids and in IPAM.
func (a *Agent) deletePod(ctx context.Context, ref platform.PodRef, deviceID string) error {
	key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
	// A pod still waiting for its interface stops waiting first (it may
	// connect meanwhile: then it is in a.pods below).
	waiting := a.late.stop(key)
	a.mu.Lock()
	p := a.pods[key]
	a.mu.Unlock()
	if p == nil && waiting != nil && (ref.Namespace == "" || ref.Name == "") {
		ref.Namespace, ref.Name = waiting.ref.Namespace, waiting.ref.Name
	}
	ports, err := a.db.ListPorts(ctx, map[string]string{extType: extTypePod, extContainerID: key.ContainerID, extIfName: key.IfName})
	if err != nil {
		return fmt.Errorf("find the pod's OVS port: %w", err)
	}
	if ref.Namespace == "" || ref.Name == "" {
		switch {
		case p != nil:
			ref.Namespace, ref.Name = p.ref.Namespace, p.ref.Name
		case len(ports) > 0:
			ref.Namespace, ref.Name = ports[0].ExternalIDs[extNamespace], ports[0].ExternalIDs[extName]
		default:
			if al, ok := a.ipam.Lookup(key); ok {
				ref.Namespace, ref.Name = al.PodNamespace, al.PodName
			}
		}
	}
	if p != nil {
		// The pod leaves the desired state first, so the next replay drops
		// its flows even if this delete cannot reach ovs-vswitchd (which
		// then has lost its flows anyway); DEL does not wait for a switch
		// that is away, nor longer than flowDeleteTimeout for one that
		// does not answer.
		fctx, cancel := context.WithTimeout(ctx, flowDeleteTimeout)
		err := a.removePodFlows(fctx, p, true)
		cancel()
		if err != nil {
			a.log.Warn("pod flows not deleted now; the next replay drops them", "pod", p.ref.Namespace+"/"+p.ref.Name, "err", err)
		}
		// Its policy flows go later: the port is gone, and an ADD that
		// reuses its ofport recomputes the policy flows before it returns.
		a.policy.PodsChangedLater()
	}
	a.hostPorts.Release(key.String())
	if p != nil {
		if err := a.syncPodHostPorts(ctx, p); err != nil {
			a.log.Warn("host ports not unmapped now; the next host resync does it", "pod", p.ref.Namespace+"/"+p.ref.Name, "err", err)
		}
	}
	for _, port := range ports {
		if err := a.db.DeletePort(ctx, port.Name); err != nil {
			return fmt.Errorf("delete OVS port %s: %w", port.Name, err)
		}
	}
	vf, err := a.podVF(p, ports, &ref)
	if err != nil {
		return err
	}
	if vf == nil && deviceID != "" {
		vf = &platform.VF{PCIAddress: deviceID} // the backend finds the rest on the VF
	}
	if ref.Namespace != "" && ref.Name != "" {
		if err := a.detachInterface(ctx, ref, vf); err != nil {
			return fmt.Errorf("detach pod interface: %w", err)
		}
	}
	if err := a.ipam.Release(key); err != nil {
		return fmt.Errorf("release IP: %w", err)
	}
	a.poke() // the last pod of a changed pod CIDR may be gone (podcidr.go)
	a.log.Info("pod deleted", "pod", ref.Namespace+"/"+ref.Name, "container", shortID(ref.ContainerID))
	return nil
}

// Check is CNI CHECK: the interface, the OVS port and the flows must all be
// as ADD left them.
func (a *Agent) Check(ctx context.Context, r *cni.Request) error {
	ref := podRef(r)
	key := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
	a.mu.Lock()
	p := a.pods[key]
	a.mu.Unlock()
	if p == nil && a.late.pending(key) != nil {
		return cni.Errorf(types.ErrTryAgainLater, "attachment %s of container %s: its interface is not connected to OVS yet (waiting for the runtime to start the sandbox)", ref.IfName, ref.ContainerID)
	}
	if p == nil {
		return cni.Errorf(types.ErrUnknownContainer, "no attachment %s of container %s", ref.IfName, ref.ContainerID)
	}
	var errs []error
	if al, ok := a.ipam.Lookup(key); !ok || fmt.Sprint(al.IPs) != fmt.Sprint(p.ips) {
		errs = append(errs, fmt.Errorf("IPAM holds %v for it, want %v", al.IPs, p.ips))
	}
	if err := a.checkInterface(ctx, a.podNetwork(p.ref, p.ips, p.vfMAC()), p.vf); err != nil {
		errs = append(errs, fmt.Errorf("interface: %w", err))
	}
	port, err := a.db.GetPort(ctx, p.port)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("OVS port %s: %w", p.port, err))
	case port.OFPort != int(p.ofport):
		errs = append(errs, fmt.Errorf("OVS port %s: ofport %d, want %d", p.port, port.OFPort, p.ofport))
	}
	missing, err := a.missingPodFlows(ctx, p)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("flows: %w", err))
	case len(missing) > 0:
		errs = append(errs, fmt.Errorf("%d flows missing, first: %s", len(missing), missing[0]))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("check %s: %w", p.ref, err)
	}
	return nil
}

// Status is CNI STATUS: ready once node setup is done.
func (a *Agent) Status(context.Context, *cni.Request) error {
	if ok, why := a.Ready(); !ok {
		return cni.Errorf(types.ErrPluginNotAvailable, "seine-agent is not ready: %s", why)
	}
	return nil
}

// GC is CNI GC: every attachment not in valid is torn down.
func (a *Agent) GC(ctx context.Context, _ *cni.Request, valid []cni.Attachment) error {
	keep := map[ipam.Key]bool{}
	for _, v := range valid {
		keep[ipam.Key{ContainerID: v.ContainerID, IfName: v.IfName}] = true
	}
	stale := map[ipam.Key]platform.PodRef{}
	a.mu.Lock()
	for k, p := range a.pods {
		if !keep[k] {
			stale[k] = p.ref
		}
	}
	a.mu.Unlock()
	ports, err := a.db.ListPorts(ctx, map[string]string{extType: extTypePod})
	if err != nil {
		return fmt.Errorf("list pod ports: %w", err)
	}
	for _, port := range ports {
		ref := refFromExternalIDs(port.ExternalIDs)
		k := ipam.Key{ContainerID: ref.ContainerID, IfName: ref.IfName}
		if _, seen := stale[k]; !seen && !keep[k] {
			stale[k] = ref
		}
	}
	for _, al := range a.ipam.List() {
		if _, seen := stale[al.Key]; !seen && !keep[al.Key] {
			stale[al.Key] = platform.PodRef{Namespace: al.PodNamespace, Name: al.PodName, ContainerID: al.ContainerID, IfName: al.IfName}
		}
	}
	var errs []error
	for _, ref := range stale {
		if err := a.deletePod(ctx, ref, ""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// podVF is the VF record of an attachment being deleted (from the agent's
// state or its port's external_ids), nil for a veth pod. A VF is found in
// the pod's namespace, so ref gets the recorded one when the DEL has none.
func (a *Agent) podVF(p *podState, ports []ovsdb.PortInfo, ref *platform.PodRef) (*platform.VF, error) {
	if p != nil && p.vf != nil {
		if ref.NetNS == "" {
			ref.NetNS = p.ref.NetNS
		}
		return p.vf, nil
	}
	for _, port := range ports {
		vf, err := vfFromExternalIDs(port.ExternalIDs)
		if err != nil {
			return nil, fmt.Errorf("port %s: %w", port.Name, err)
		}
		if vf != nil {
			if ref.NetNS == "" {
				ref.NetNS = port.ExternalIDs[extNetNS]
			}
			return vf, nil
		}
	}
	return nil, nil
}

// vfMAC is the MAC a VF pod's interface must have (Seine sets it); nil
// for a veth pod, whose MAC the kernel chose.
func (p *podState) vfMAC() net.HardwareAddr {
	if p.vf == nil {
		return nil
	}
	return p.mac
}

func refFromExternalIDs(ids map[string]string) platform.PodRef {
	return platform.PodRef{
		Namespace: ids[extNamespace], Name: ids[extName],
		ContainerID: ids[extContainerID], IfName: ids[extIfName], NetNS: ids[extNetNS],
	}
}
