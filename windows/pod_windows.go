package windows

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/Microsoft/go-winio/pkg/guid"
	"github.com/Microsoft/hcsshim/hcn"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// maxPortNameLen keeps OVS port names as short as on Linux, so one name
// fits every tool and log on both OSes.
const maxPortNameLen = 15

// PortName is the name of the pod's port on the bridge (the HNS endpoint's
// switch port, PodInterface.HostName): up to 8 characters of the pod name, a
// '-' and 6 hex digits of a hash of namespace, name, container ID and
// interface, as on Linux.
func PortName(ref platform.PodRef) string {
	h := sha256.Sum256([]byte(ref.Namespace + "/" + ref.Name + "/" + ref.ContainerID + "/" + ref.IfName))
	suffix := hex.EncodeToString(h[:3])
	var b strings.Builder
	for _, r := range strings.ToLower(ref.Name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		}
	}
	prefix := b.String()
	if room := maxPortNameLen - 1 - len(suffix); len(prefix) > room {
		prefix = prefix[:room]
	}
	prefix = strings.TrimRight(prefix, "-.")
	if prefix == "" {
		prefix = "pod"
	}
	return prefix + "-" + suffix
}

// EndpointName is the HNS endpoint of an attachment:
// seine_<namespace>_<pod>_<container ID>_<interface>. Kubernetes names have
// no '_', so the name says which pod and sandbox an endpoint belongs to; a
// restarted agent finds endpoints of sandboxes that are gone by it.
func EndpointName(ref platform.PodRef) string {
	return EndpointPrefix + ref.Namespace + "_" + ref.Name + "_" + ref.ContainerID + "_" + ref.IfName
}

// parseEndpointName is EndpointName's inverse; ok is false for endpoints
// that are not Seine's.
func parseEndpointName(name string) (ref platform.PodRef, ok bool) {
	rest, ok := strings.CutPrefix(name, EndpointPrefix)
	if !ok {
		return ref, false
	}
	f := strings.SplitN(rest, "_", 4)
	if len(f) != 4 || slices.Contains(f, "") {
		return ref, false
	}
	return platform.PodRef{Namespace: f[0], Name: f[1], ContainerID: f[2], IfName: f[3]}, true
}

// portNamePolicy names the endpoint's switch port, which the OVS extension
// matches to the bridge port of that name. hcn has the policy type but no
// settings struct for it.
type portNamePolicy struct {
	Name string
}

// endpointRequest builds the HNS endpoint of a pod: its addresses, routes
// via the gateway, an optional fixed MAC, the switch port name, and the
// encap overhead that brings the endpoint's MTU from the uplink's down to
// the pod MTU.
func endpointRequest(pod platform.PodNetwork, networkID string, uplinkMTU int) *hcn.HostComputeEndpoint {
	ep := &hcn.HostComputeEndpoint{
		Name:               EndpointName(pod.PodRef),
		HostComputeNetwork: networkID,
		SchemaVersion:      hcn.SchemaVersion{Major: 2, Minor: 0},
	}
	for _, ip := range pod.IPs {
		ep.IpConfigurations = append(ep.IpConfigurations, hcn.IpConfig{IpAddress: ip.Addr().String(), PrefixLength: uint8(ip.Bits())})
	}
	for _, r := range pod.EffectiveRoutes() {
		ep.Routes = append(ep.Routes, hcn.Route{NextHop: r.Via.String(), DestinationPrefix: r.Dst.String()})
	}
	if pod.MAC != nil {
		ep.MacAddress = hnsMAC(pod.MAC)
	}
	port, _ := json.Marshal(portNamePolicy{Name: PortName(pod.PodRef)})
	ep.Policies = append(ep.Policies, hcn.EndpointPolicy{Type: hcn.PortName, Settings: port})
	if pod.MTU > 0 && uplinkMTU > pod.MTU {
		o, _ := json.Marshal(hcn.EncapOverheadEndpointPolicySetting{Overhead: uint16(uplinkMTU - pod.MTU)})
		ep.Policies = append(ep.Policies, hcn.EndpointPolicy{Type: hcn.EncapOverhead, Settings: o})
	}
	return ep
}

// hnsMAC formats a MAC as HNS does: 00-15-5D-0A-0B-0C.
func hnsMAC(mac net.HardwareAddr) string {
	return strings.ToUpper(strings.ReplaceAll(mac.String(), ":", "-"))
}

// endpointProblems lists how an endpoint differs from the pod's desired
// network: addresses, MAC, namespace, switch port name.
func endpointProblems(ep *hcn.HostComputeEndpoint, pod platform.PodNetwork) []string {
	var p []string
	var have, want []string
	for _, c := range ep.IpConfigurations {
		have = append(have, fmt.Sprintf("%s/%d", c.IpAddress, c.PrefixLength))
	}
	for _, ip := range pod.IPs {
		want = append(want, ip.String())
	}
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		p = append(p, fmt.Sprintf("addresses %v, want %v", have, want))
	}
	if pod.MAC != nil && !strings.EqualFold(ep.MacAddress, hnsMAC(pod.MAC)) {
		p = append(p, fmt.Sprintf("MAC %s, want %s", ep.MacAddress, hnsMAC(pod.MAC)))
	}
	if !sameGUID(ep.HostComputeNamespace, pod.NetNS) {
		p = append(p, fmt.Sprintf("namespace %q, want %q", ep.HostComputeNamespace, pod.NetNS))
	}
	for _, pol := range ep.Policies {
		var s portNamePolicy
		if pol.Type == hcn.PortName && json.Unmarshal(pol.Settings, &s) == nil && s.Name != PortName(pod.PodRef) {
			p = append(p, fmt.Sprintf("switch port %q, want %q", s.Name, PortName(pod.PodRef)))
		}
	}
	return p
}

func sameGUID(a, b string) bool {
	return strings.EqualFold(strings.Trim(a, "{}"), strings.Trim(b, "{}"))
}

// namespaceID checks that netns is an HNS namespace GUID and returns it
// without braces.
func namespaceID(netns string) (string, error) {
	id := strings.Trim(netns, "{}")
	if _, err := guid.FromString(id); err != nil {
		return "", fmt.Errorf("network namespace %q: want an HNS namespace GUID: %w (%w)", netns, err, platform.ErrNoNetNS)
	}
	return id, nil
}

// networkID returns the HNS network of the node: the one Setup found or,
// in a process that has not run Setup (the CNI path after a restart), the
// one with Seine's name. ok is false when there is none.
func (b *Backend) networkID(ctx context.Context) (id string, ok bool, err error) {
	b.node.Lock()
	id = b.node.networkID
	b.node.Unlock()
	if id != "" {
		return id, true, nil
	}
	n, err := b.hns.NetworkByName(ctx, NetworkName)
	if err != nil {
		return "", false, fmt.Errorf("find HNS network %s: %w", NetworkName, err)
	}
	if n == nil {
		return "", false, nil
	}
	return n.Id, true, nil
}

// Attach creates the pod's HNS endpoint on Seine's network and attaches it
// to the pod's HNS namespace (see platform.PodAttacher). An endpoint of the
// same attachment that matches is kept (a retried ADD); one that does not
// is replaced. Endpoints of the same pod and interface whose sandbox is
// gone (a crash between ADD and DEL) are deleted first. If attaching to the
// namespace fails, the new endpoint is deleted again.
func (b *Backend) Attach(ctx context.Context, pod platform.PodNetwork) (platform.PodInterface, error) {
	if err := pod.Validate(); err != nil {
		return platform.PodInterface{}, err
	}
	iface, err := b.attach(ctx, pod)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("attach pod %s: %w", pod.PodRef, err)
	}
	return iface, nil
}

func (b *Backend) attach(ctx context.Context, pod platform.PodNetwork) (platform.PodInterface, error) {
	nsID, err := namespaceID(pod.NetNS)
	if err != nil {
		return platform.PodInterface{}, err
	}
	netID, ok, err := b.networkID(ctx)
	if err != nil {
		return platform.PodInterface{}, err
	}
	if !ok {
		return platform.PodInterface{}, fmt.Errorf("HNS network %s does not exist (node setup has not run)", NetworkName)
	}
	switch alive, err := b.hns.NamespaceExists(ctx, nsID); {
	case err != nil:
		return platform.PodInterface{}, fmt.Errorf("HNS namespace %s: %w", nsID, err)
	case !alive:
		return platform.PodInterface{}, fmt.Errorf("HNS namespace %s: %w", nsID, platform.ErrNoNetNS)
	}
	eps, err := b.hns.Endpoints(ctx, netID)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("list HNS endpoints: %w", err)
	}
	if err := b.deleteStale(ctx, eps, pod.PodRef); err != nil {
		return platform.PodInterface{}, err
	}
	name := EndpointName(pod.PodRef)
	if i := slices.IndexFunc(eps, func(ep hcn.HostComputeEndpoint) bool { return ep.Name == name }); i >= 0 {
		ep := &eps[i]
		problems := endpointProblems(ep, pod)
		if len(problems) == 0 {
			return podInterface(ep, pod)
		}
		b.log.Info("replacing HNS endpoint", "endpoint", name, "problems", strings.Join(problems, "; "))
		if err := b.hns.DeleteEndpoint(ctx, ep.Id); err != nil {
			return platform.PodInterface{}, fmt.Errorf("delete HNS endpoint %s: %w", name, err)
		}
	}
	b.node.Lock()
	uplinkMTU := b.node.uplinkMTU
	b.node.Unlock()
	ep, err := b.hns.CreateEndpoint(ctx, netID, endpointRequest(pod, netID, uplinkMTU))
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("create HNS endpoint %s: %w", name, err)
	}
	iface, err := podInterface(ep, pod)
	if err == nil {
		err = b.hns.AttachEndpoint(ctx, nsID, ep.Id)
		if err != nil {
			err = fmt.Errorf("attach HNS endpoint %s to namespace %s: %w", name, nsID, err)
		}
	}
	if err != nil {
		if derr := b.hns.DeleteEndpoint(ctx, ep.Id); derr != nil {
			return platform.PodInterface{}, fmt.Errorf("%w (and deleting the endpoint again: %v)", err, derr)
		}
		return platform.PodInterface{}, err
	}
	return iface, nil
}

// podInterface is what Attach returns for an endpoint: the switch port for
// the core to plug as an internal port, with the endpoint's MAC. It is Late:
// under containerd the endpoint's vNIC, and the switch port the OVS
// extension binds, appear only when the runtime starts the sandbox, after
// ADD returns (PodInterfaceReady says when).
func podInterface(ep *hcn.HostComputeEndpoint, pod platform.PodNetwork) (platform.PodInterface, error) {
	mac, err := net.ParseMAC(ep.MacAddress)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("HNS endpoint %s: MAC %q: %w", ep.Name, ep.MacAddress, err)
	}
	return platform.PodInterface{
		HostName: PortName(pod.PodRef), PortType: ovsdb.TypeInternal,
		MAC: mac, IPs: slices.Clone(pod.IPs), Late: true,
	}, nil
}

var _ platform.LatePodInterfaces = (*Backend)(nil)

// PodInterfaceReady reports whether the pod's endpoint has its vNIC: an
// adapter with the endpoint's MAC in any compartment (the container's, once
// the runtime started the sandbox). Antrea waits for the same thing before
// it gives the OVS port its type. The endpoint being gone is an error.
func (b *Backend) PodInterfaceReady(ctx context.Context, ref platform.PodRef, iface platform.PodInterface) (bool, error) {
	netID, ok, err := b.networkID(ctx)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("HNS network %s does not exist", NetworkName)
	}
	eps, err := b.hns.Endpoints(ctx, netID)
	if err != nil {
		return false, fmt.Errorf("list HNS endpoints: %w", err)
	}
	name := EndpointName(ref)
	i := slices.IndexFunc(eps, func(ep hcn.HostComputeEndpoint) bool { return ep.Name == name })
	if i < 0 {
		return false, fmt.Errorf("pod %s: no HNS endpoint %s", ref, name)
	}
	mac, err := net.ParseMAC(eps[i].MacAddress)
	if err != nil {
		return false, fmt.Errorf("HNS endpoint %s: MAC %q: %w", name, eps[i].MacAddress, err)
	}
	up, err := b.stack.AdapterWithMAC(ctx, mac)
	if err != nil {
		return false, fmt.Errorf("pod %s: look for the vNIC of HNS endpoint %s: %w", ref, name, err)
	}
	return up, nil
}

// deleteStale deletes the endpoints of ref's pod and interface that belong
// to another sandbox whose HNS namespace is gone.
func (b *Backend) deleteStale(ctx context.Context, eps []hcn.HostComputeEndpoint, ref platform.PodRef) error {
	for _, ep := range eps {
		other, ok := parseEndpointName(ep.Name)
		if !ok || other.Namespace != ref.Namespace || other.Name != ref.Name || other.IfName != ref.IfName ||
			other.ContainerID == ref.ContainerID {
			continue
		}
		alive := false
		if ep.HostComputeNamespace != "" {
			var err error
			if alive, err = b.hns.NamespaceExists(ctx, ep.HostComputeNamespace); err != nil {
				return fmt.Errorf("HNS namespace %s of endpoint %s: %w", ep.HostComputeNamespace, ep.Name, err)
			}
		}
		if alive {
			continue
		}
		b.log.Info("deleting stale HNS endpoint", "endpoint", ep.Name, "namespace", ep.HostComputeNamespace)
		if err := b.hns.DeleteEndpoint(ctx, ep.Id); err != nil {
			return fmt.Errorf("delete stale HNS endpoint %s: %w", ep.Name, err)
		}
	}
	return nil
}

// Detach deletes the attachment's HNS endpoint, and the stale endpoints of
// the same pod and interface, and succeeds when there is nothing to delete
// (no endpoint, no network, the namespace already gone).
func (b *Backend) Detach(ctx context.Context, ref platform.PodRef) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if err := b.detach(ctx, ref); err != nil {
		return fmt.Errorf("detach pod %s: %w", ref, err)
	}
	return nil
}

func (b *Backend) detach(ctx context.Context, ref platform.PodRef) error {
	netID, ok, err := b.networkID(ctx)
	if err != nil || !ok {
		return err
	}
	eps, err := b.hns.Endpoints(ctx, netID)
	if err != nil {
		return fmt.Errorf("list HNS endpoints: %w", err)
	}
	name := EndpointName(ref)
	var errs []error
	for _, ep := range eps {
		if ep.Name == name {
			errs = append(errs, b.hns.DeleteEndpoint(ctx, ep.Id))
		}
	}
	errs = append(errs, b.deleteStale(ctx, eps, ref))
	return errors.Join(errs...)
}

// Check reports how the host differs from the pod's desired network: a
// missing endpoint or network, other addresses, MAC, namespace or port.
func (b *Backend) Check(ctx context.Context, pod platform.PodNetwork) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	if err := b.check(ctx, pod); err != nil {
		return fmt.Errorf("check pod %s: %w", pod.PodRef, err)
	}
	return nil
}

func (b *Backend) check(ctx context.Context, pod platform.PodNetwork) error {
	netID, ok, err := b.networkID(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("HNS network %s does not exist", NetworkName)
	}
	eps, err := b.hns.Endpoints(ctx, netID)
	if err != nil {
		return fmt.Errorf("list HNS endpoints: %w", err)
	}
	name := EndpointName(pod.PodRef)
	i := slices.IndexFunc(eps, func(ep hcn.HostComputeEndpoint) bool { return ep.Name == name })
	if i < 0 {
		return fmt.Errorf("no HNS endpoint %s", name)
	}
	var errs []error
	for _, p := range endpointProblems(&eps[i], pod) {
		errs = append(errs, errors.New(p))
	}
	if ns := eps[i].HostComputeNamespace; ns != "" {
		alive, err := b.hns.NamespaceExists(ctx, ns)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("HNS namespace %s: %w", ns, err))
		case !alive:
			errs = append(errs, fmt.Errorf("HNS namespace %s is gone", ns))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("HNS endpoint %s: %w", name, err)
	}
	return nil
}
