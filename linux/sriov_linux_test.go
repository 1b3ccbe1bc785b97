package linux

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/k8snetworkplumbingwg/sriovnet/pkg/utils/netlinkops"
	"github.com/vishvananda/netlink"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/sriovfs"
)

// fakeDevlink answers devlink questions from a map (no entry: an error,
// as on a machine whose driver has no devlink instance for the device).
type fakeDevlink map[string]string

func (f fakeDevlink) EswitchMode(pci string) (string, error) {
	if m, ok := f[pci]; ok {
		return m, nil
	}
	return "", fmt.Errorf("devlink pci/%s: no such device", pci)
}

// fakeNetlinkOps is sriovnet's netlink seam: devlink ports from a map,
// everything else unused by discovery (nil interface: a call panics).
type fakeNetlinkOps struct {
	netlinkops.NetlinkOps
	ports map[string][]*netlink.DevlinkPort
}

func (f fakeNetlinkOps) DevLinkGetDevicePortList(bus, dev string) ([]*netlink.DevlinkPort, error) {
	if p, ok := f.ports[bus+"/"+dev]; ok {
		return p, nil
	}
	return nil, errors.New("no such device")
}

func (f fakeNetlinkOps) DevLinkGetAllPortList() ([]*netlink.DevlinkPort, error) {
	var all []*netlink.DevlinkPort
	for _, p := range f.ports {
		all = append(all, p...)
	}
	return all, nil
}

func (f fakeNetlinkOps) DevLinkGetPortByNetdevName(name string) (*netlink.DevlinkPort, error) {
	for _, ports := range f.ports {
		for _, p := range ports {
			if p.NetdeviceName == name {
				return p, nil
			}
		}
	}
	return nil, errors.New("no such device")
}

func testSriovHost(t *testing.T, dl fakeDevlink, pfs ...sriovfs.PF) *sriovHost {
	root := t.TempDir()
	sriovfs.Write(t, root, pfs...)
	h := newSriovHost(root, nil)
	h.devlink = dl
	h.nlops = fakeNetlinkOps{}
	return h
}

// nic is a two-port NIC: pf0 in switchdev mode with three VFs enabled of
// four (VF 1 without a netdev, VF 2 without a representor), pf1 legacy.
func nic() []sriovfs.PF {
	return []sriovfs.PF{{
		PCI: "0000:5e:00.0", Name: "ens1f0", SwitchID: "b8cef603003c1e5a", NumVFs: 3, TotalVFs: 8,
		VFs: []sriovfs.VF{
			{PCI: "0000:5e:00.2", Netdev: "ens1f0v0", Rep: "ens1f0_0"},
			{PCI: "0000:5e:00.3", Rep: "ens1f0_1"},
			{PCI: "0000:5e:00.4", Netdev: "ens1f0v2"},
			{PCI: "0000:5e:00.5", Netdev: "ens1f0v3", Rep: "ens1f0_3"}, // beyond sriov_numvfs
		},
	}, {
		PCI: "0000:5e:00.1", Name: "ens1f1", NumVFs: 1, TotalVFs: 8,
		VFs: []sriovfs.VF{{PCI: "0000:5e:01.2", Netdev: "ens1f1v0"}},
	}}
}

func TestLookupVF(t *testing.T) {
	h := testSriovHost(t, fakeDevlink{"0000:5e:00.0": "switchdev", "0000:5e:00.1": "legacy"}, nic()...)
	for _, tc := range []struct {
		pci, want, err string
	}{
		{pci: "0000:5e:00.2", want: "pf=0000:5e:00.0 ens1f0 index=0 netdev=ens1f0v0 rep=ens1f0_0"},
		{pci: "0000:5e:00.3", want: "pf=0000:5e:00.0 ens1f0 index=1 netdev= rep=ens1f0_1"},
		{pci: "0000:5e:00.4", err: "VF 2 of ens1f0 has no representor"},
		{pci: "0000:5e:00.5", err: "VF 0000:5e:00.5 is VF 3 of PF 0000:5e:00.0, which has only 3 VFs enabled (sriov_numvfs)"},
		{pci: "0000:5e:01.2", err: `PF 0000:5e:00.1 is in eswitch mode "legacy", not switchdev`},
		{pci: "0000:5e:00.0", err: "PCI device 0000:5e:00.0 is not an SR-IOV VF (no physfn link)"},
		{pci: "0000:5e:07.2", err: "no PCI device 0000:5e:07.2 on this node"},
		{pci: "5e:00.2", err: `device ID "5e:00.2" is not a PCI address like 0000:03:00.2`},
		{pci: "0000:5E:00.2", err: "is not a PCI address"},
	} {
		t.Run(tc.pci, func(t *testing.T) {
			vf, err := h.lookupVF(tc.pci)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, platform.ErrVFUnavailable) {
					t.Fatalf("lookupVF(%s) = %+v, %v; want an ErrVFUnavailable containing %q", tc.pci, vf, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("pf=%s %s index=%d netdev=%s rep=%s", vf.PFPCI, vf.PF, vf.Index, vf.Netdev, vf.Representor)
			if got != tc.want {
				t.Errorf("lookupVF(%s):\n got %s\nwant %s", tc.pci, got, tc.want)
			}
		})
	}
}

// Without devlink (no instance, or an old kernel) the PF's mode is what
// sysfs shows: a legacy PF has no phys_switch_id, and no uplink
// representor is found for its VFs.
func TestLookupVFWithoutDevlink(t *testing.T) {
	h := testSriovHost(t, fakeDevlink{}, nic()...)
	if _, err := h.lookupVF("0000:5e:00.2"); err != nil {
		t.Errorf("switchdev PF by sysfs: %v", err)
	}
	_, err := h.lookupVF("0000:5e:01.2")
	if err == nil || !strings.Contains(err.Error(), "PF 0000:5e:00.1 of VF 0000:5e:01.2 is not in switchdev mode") {
		t.Errorf("legacy PF by sysfs: %v", err)
	}
}

// The representor comes from devlink's port list when the driver has one,
// before sysfs's phys_port_name is consulted.
func TestLookupVFRepresentorFromDevlink(t *testing.T) {
	h := testSriovHost(t, fakeDevlink{"0000:5e:00.0": "switchdev"}, nic()...)
	vfNum := uint16(2)
	h.nlops = fakeNetlinkOps{ports: map[string][]*netlink.DevlinkPort{
		"pci/0000:5e:00.0": {{PortIndex: 3, PortFlavour: 4 /* PCI_VF */, VfNumber: &vfNum, NetdeviceName: "eth7"}},
	}}
	vf, err := h.lookupVF("0000:5e:00.4")
	if err != nil {
		t.Fatal(err)
	}
	if vf.Representor != "eth7" {
		t.Errorf("representor %q, want eth7 (devlink)", vf.Representor)
	}
}

func TestDiscoverSRIOV(t *testing.T) {
	h := testSriovHost(t, fakeDevlink{"0000:5e:00.1": "legacy"}, nic()...)
	pfs, err := h.discover()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, pf := range pfs {
		got = append(got, fmt.Sprintf("%s %s mode=%q vfs=%d/%d switchdev=%v err=%q", pf.PCIAddress, pf.Name, pf.EswitchMode, pf.NumVFs, pf.TotalVFs, pf.Switchdev(), pf.Error))
	}
	want := []string{
		`0000:5e:00.0 ens1f0 mode="switchdev" vfs=3/8 switchdev=true err=""`,
		`0000:5e:00.1 ens1f1 mode="legacy" vfs=1/8 switchdev=false err="eswitch mode \"legacy\", not switchdev"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("discover:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	empty := testSriovHost(t, fakeDevlink{})
	if pfs, err := empty.discover(); err != nil || len(pfs) != 0 {
		t.Errorf("a node without SR-IOV: %v, %v; want nothing", pfs, err)
	}
}
