package platformtest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// FakeVFs is a platform.VFPodAttacher and platform.SRIOVDiscoverer over a
// NIC in memory: PF "pf0" (PCI 0000:5e:00.0, switchdev) whose VFs are the
// PCI addresses given to NewFakeVFs, VF i with netdev "pf0v<i>" and
// representor "pf0_<i>". A VF is free or attached to one pod; attaching a
// busy or unknown VF fails with platform.ErrVFUnavailable.
type FakeVFs struct {
	recorder
	vfs   []string                       // PCI addresses, by index
	users map[string]platform.PodRef     // PCI address -> pod
	nets  map[string]platform.PodNetwork // PCI address -> pod network
	recs  map[string]platform.VF         // PCI address -> record
	eswi  string
}

var (
	_ platform.VFPodAttacher   = (*FakeVFs)(nil)
	_ platform.SRIOVDiscoverer = (*FakeVFs)(nil)
)

// NewFakeVFs returns a NIC with the given VFs, free.
func NewFakeVFs(pcis ...string) *FakeVFs {
	return &FakeVFs{vfs: pcis, users: map[string]platform.PodRef{}, nets: map[string]platform.PodNetwork{}, recs: map[string]platform.VF{},
		eswi: "switchdev"}
}

// SetEswitchMode changes what discovery reports for pf0 ("legacy", ...).
func (f *FakeVFs) SetEswitchMode(mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eswi = mode
}

// DiscoverSRIOV reports pf0.
func (f *FakeVFs) DiscoverSRIOV(context.Context) ([]platform.SwitchdevPF, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("DiscoverSRIOV"); err != nil {
		f.logf("DiscoverSRIOV: error: %v", err)
		return nil, err
	}
	f.logf("DiscoverSRIOV")
	pf := platform.SwitchdevPF{Name: "pf0", PCIAddress: "0000:5e:00.0", EswitchMode: f.eswi, NumVFs: len(f.vfs), TotalVFs: len(f.vfs)}
	if f.eswi != "switchdev" {
		pf.Error = fmt.Sprintf("eswitch mode %q, not switchdev", f.eswi)
	}
	return []platform.SwitchdevPF{pf}, nil
}

// AttachVF gives the VF to the pod.
func (f *FakeVFs) AttachVF(_ context.Context, pod platform.PodNetwork, pci string) (platform.PodInterface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("AttachVF %s %s", pci, podText(pod))
	fail := func(err error) (platform.PodInterface, error) {
		f.logf("%s: error: %v", line, err)
		return platform.PodInterface{}, err
	}
	if err := f.fault("AttachVF"); err != nil {
		return fail(err)
	}
	if err := pod.Validate(); err != nil {
		return fail(err)
	}
	i := slices.Index(f.vfs, pci)
	if i < 0 {
		return fail(fmt.Errorf("attach pod %s to VF %s: %w: no PCI device %s on this node", pod.PodRef, pci, platform.ErrVFUnavailable, pci))
	}
	if u, busy := f.users[pci]; busy {
		return fail(fmt.Errorf("attach pod %s to VF %s: %w: in use by pod %s", pod.PodRef, pci, platform.ErrVFUnavailable, u))
	}
	vf := platform.VF{PCIAddress: pci, PF: "pf0", Index: i, Representor: fmt.Sprintf("pf0_%d", i),
		HostName: fmt.Sprintf("pf0v%d", i), HostMAC: fakeMAC(pci), HostMTU: 1500}
	f.users[pci] = pod.PodRef
	f.nets[pci] = pod
	f.recs[pci] = vf
	f.logf("%s -> %s", line, vf.Representor)
	mac := pod.MAC
	if mac == nil {
		mac = vf.HostMAC
	}
	return platform.PodInterface{HostName: vf.Representor, PortType: ovsdb.TypeSystem, MAC: mac,
		HostMAC: fakeMAC(vf.Representor), IPs: slices.Clone(pod.IPs), VF: &vf}, nil
}

// DetachVF frees the VF; a free one is not an error. A record with only
// the PCI address (lost by the core) is completed from the fake's own.
func (f *FakeVFs) DetachVF(_ context.Context, ref platform.PodRef, vf platform.VF) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("DetachVF %s %s", vf.PCIAddress, ref)
	if err := f.fault("DetachVF"); err != nil {
		f.logf("%s: error: %v", line, err)
		return err
	}
	if u, ok := f.users[vf.PCIAddress]; !ok || keyOf(u) != keyOf(ref) {
		f.logf("%s (no change)", line)
		return nil
	}
	rec := f.recs[vf.PCIAddress]
	delete(f.users, vf.PCIAddress)
	delete(f.nets, vf.PCIAddress)
	delete(f.recs, vf.PCIAddress)
	f.logf("%s -> %s back", line, rec.HostName)
	return nil
}

// CheckVF fails unless the VF is the pod's with exactly this network.
func (f *FakeVFs) CheckVF(_ context.Context, pod platform.PodNetwork, vf platform.VF) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("CheckVF %s %s", vf.PCIAddress, pod.PodRef)
	var err error
	cur, ok := f.nets[vf.PCIAddress]
	switch {
	case !ok || keyOf(cur.PodRef) != keyOf(pod.PodRef):
		err = fmt.Errorf("check %s: VF %s: %w", pod.PodRef, vf.PCIAddress, ErrPodNotAttached)
	case podText(cur) != podText(pod):
		err = fmt.Errorf("check %s: have %s, want %s", pod.PodRef, podText(cur), podText(pod))
	}
	if err != nil {
		f.logf("%s: error: %v", line, err)
		return err
	}
	f.logf("%s: ok", line)
	return nil
}

// Dump lists the VFs in use, one per line: "<pci> <pod>".
func (f *FakeVFs) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, pci := range slices.Sorted(maps.Keys(f.users)) {
		fmt.Fprintf(&b, "%s %s\n", pci, f.users[pci])
	}
	return b.String()
}
