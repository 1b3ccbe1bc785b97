package platformtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// ErrPodNotAttached is what FakePodAttacher.Check returns (wrapped) for an
// attachment it does not have.
var ErrPodNotAttached = errors.New("pod not attached")

// FakePodAttacher is a platform.PodAttacher that keeps attachments in memory.
// Host interface names are "fake" plus a hash of the attachment, MACs derive
// from the names. With Late set it models Windows under containerd: the
// interface exists only once the runtime starts the sandbox (StartSandbox),
// after ADD; it is also a platform.LatePodInterfaces.
type FakePodAttacher struct {
	recorder
	// PortType is what Attach reports (ovsdb.TypeSystem, as on Linux, by default).
	PortType ovsdb.InterfaceType
	// Late makes Attach report interfaces that appear only at StartSandbox.
	Late bool
	// Devices, when set, is told when a late interface's device exists
	// (a FakeOVSDB: a port for an absent device gets ofport -1).
	Devices interface {
		SetDevicePresent(name string, present bool)
	}
	pods    map[attachmentKey]attached
	started map[attachmentKey]bool
	goneNS  map[string]bool
}

var _ platform.LatePodInterfaces = (*FakePodAttacher)(nil)

// RemoveNetNS makes netns a namespace that does not exist: Attach into it
// fails with an error wrapping platform.ErrNoNetNS, and Check of an
// attachment in it reports it gone.
func (f *FakePodAttacher) RemoveNetNS(netns string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.goneNS == nil {
		f.goneNS = map[string]bool{}
	}
	f.goneNS[netns] = true
}

// StartSandbox is the runtime starting the pod's sandbox after ADD: a late
// interface appears (and its device, for Devices).
func (f *FakePodAttacher) StartSandbox(ref platform.PodRef) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started == nil {
		f.started = map[attachmentKey]bool{}
	}
	f.started[keyOf(ref)] = true
	if f.Devices != nil {
		f.Devices.SetDevicePresent(HostName(ref), true)
	}
}

// PodInterfaceReady reports whether the attachment's sandbox has started
// (platform.LatePodInterfaces); an unknown attachment is an error.
func (f *FakePodAttacher) PodInterfaceReady(_ context.Context, ref platform.PodRef, _ platform.PodInterface) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("PodInterfaceReady"); err != nil {
		return false, err
	}
	if _, ok := f.pods[keyOf(ref)]; !ok {
		return false, fmt.Errorf("pod %s: %w", ref, ErrPodNotAttached)
	}
	return f.started[keyOf(ref)], nil
}

type attachmentKey struct{ containerID, ifName string }

type attached struct {
	net   platform.PodNetwork
	iface platform.PodInterface
}

var _ platform.PodAttacher = (*FakePodAttacher)(nil)

// NewFakePodAttacher returns an attacher with no pods.
func NewFakePodAttacher() *FakePodAttacher {
	return &FakePodAttacher{pods: map[attachmentKey]attached{}}
}

func keyOf(r platform.PodRef) attachmentKey { return attachmentKey{r.ContainerID, r.IfName} }

// HostName is the host interface name the fake gives an attachment.
func HostName(r platform.PodRef) string {
	h := sha256.Sum256([]byte(r.Namespace + "/" + r.Name + "/" + r.ContainerID + "/" + r.IfName))
	return "fake" + hex.EncodeToString(h[:5])
}

// Attach records the attachment; the same network again changes nothing,
// a different one for the same container and interface replaces it.
func (f *FakePodAttacher) Attach(_ context.Context, pod platform.PodNetwork) (platform.PodInterface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "Attach " + podText(pod)
	if err := f.fault("Attach"); err != nil {
		f.logf("%s: error: %v", line, err)
		return platform.PodInterface{}, err
	}
	if err := pod.Validate(); err != nil {
		f.logf("%s: error: %v", line, err)
		return platform.PodInterface{}, err
	}
	if f.goneNS[pod.NetNS] {
		err := fmt.Errorf("attach %s: netns %s: %w", pod.PodRef, pod.NetNS, platform.ErrNoNetNS)
		f.logf("%s: error: %v", line, err)
		return platform.PodInterface{}, err
	}
	k := keyOf(pod.PodRef)
	if cur, ok := f.pods[k]; ok && podText(cur.net) == podText(pod) {
		f.logf("%s (no change)", line)
		return cur.iface, nil
	}
	host := HostName(pod.PodRef)
	iface := platform.PodInterface{
		HostName: host, PortType: f.PortType, MAC: pod.MAC, HostMAC: fakeMAC(host),
		IPs: slices.Clone(pod.IPs), Late: f.Late,
	}
	if f.Late && !f.started[k] && f.Devices != nil {
		f.Devices.SetDevicePresent(host, false)
	}
	if iface.MAC == nil {
		iface.MAC = fakeMAC(host + "/" + pod.IfName)
	}
	f.pods[k] = attached{net: pod, iface: iface}
	f.logf("%s -> %s", line, host)
	return iface, nil
}

// Detach forgets the attachment; an absent one is not an error.
func (f *FakePodAttacher) Detach(_ context.Context, ref platform.PodRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "Detach " + ref.String()
	if err := f.fault("Detach"); err != nil {
		f.logf("%s: error: %v", line, err)
		return err
	}
	if _, ok := f.pods[keyOf(ref)]; !ok {
		f.logf("%s (no change)", line)
		return nil
	}
	delete(f.pods, keyOf(ref))
	delete(f.started, keyOf(ref))
	f.logf("%s", line)
	return nil
}

// Check fails unless the attachment exists with exactly this network.
func (f *FakePodAttacher) Check(_ context.Context, pod platform.PodNetwork) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := "Check " + pod.PodRef.String()
	err := f.fault("Check")
	if err == nil {
		cur, ok := f.pods[keyOf(pod.PodRef)]
		switch {
		case !ok:
			err = fmt.Errorf("check %s: %w", pod.PodRef, ErrPodNotAttached)
		case f.goneNS[cur.net.NetNS]:
			err = fmt.Errorf("check %s: netns %s: %w", pod.PodRef, cur.net.NetNS, platform.ErrNoNetNS)
		case podText(cur.net) != podText(pod):
			err = fmt.Errorf("check %s: have %s, want %s", pod.PodRef, podText(cur.net), podText(pod))
		}
	}
	if err != nil {
		f.logf("%s: error: %v", line, err)
		return err
	}
	f.logf("%s: ok", line)
	return nil
}

// Dump lists the attachments, one per line, sorted by container and interface.
func (f *FakePodAttacher) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(f.pods), func(a, b attachmentKey) int {
		return strings.Compare(a.containerID+"/"+a.ifName, b.containerID+"/"+b.ifName)
	})
	var b strings.Builder
	for _, k := range keys {
		a := f.pods[k]
		fmt.Fprintf(&b, "%s host=%s mac=%s\n", podText(a.net), a.iface.HostName, a.iface.MAC)
	}
	return b.String()
}

func podText(p platform.PodNetwork) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s netns=%s ips=%s gw=%s", p.PodRef, p.NetNS, joinPrefixes(p.IPs), joinAddrs(p.Gateways))
	if p.GatewayMAC != nil {
		fmt.Fprintf(&b, " gwmac=%s", p.GatewayMAC)
	}
	routes := make([]string, 0, len(p.Routes))
	for _, r := range p.EffectiveRoutes() {
		routes = append(routes, r.String())
	}
	fmt.Fprintf(&b, " routes=[%s]", strings.Join(routes, ","))
	if p.MTU != 0 {
		fmt.Fprintf(&b, " mtu=%d", p.MTU)
	}
	if p.MAC != nil {
		fmt.Fprintf(&b, " mac=%s", p.MAC)
	}
	return b.String()
}
