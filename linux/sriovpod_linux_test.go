package linux

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
	"github.com/seine-cni/seine/test/sriovfs"
)

// emulatedNIC is nic()'s switchdev PF with its VFs' netdevs and
// representors as real devices in the node's namespace: each VF and its
// representor are the two ends of a veth pair, which carries frames
// between them as the NIC's embedded switch does between a VF and its
// representor. VF netdevs start with MAC 02:f0:00:00:00:0<i>, MTU 1500,
// down (as a driver creates them).
func emulatedNIC(t *testing.T, node string) (*sriovHost, sriovfs.PF) {
	t.Helper()
	pf := nic()[0]
	for i, vf := range pf.VFs {
		if vf.Netdev == "" || vf.Rep == "" {
			continue
		}
		sh(t, node, "ip", "link", "add", vf.Netdev, "address", "02:f0:00:00:00:0"+string(rune('0'+i)), "type", "veth", "peer", "name", vf.Rep)
	}
	h := testSriovHost(t, fakeDevlink{pf.PCI: "switchdev"}, pf)
	return h, pf
}

func vfPod(netns string) platform.PodNetwork {
	pod := testPod(netns)
	pod.MAC = net.HardwareAddr{0x02, 0x53, 0x00, 0x00, 0x00, 0x05}
	return pod
}

func TestAttachVF(t *testing.T) {
	requirePrivileges(t, "ethtool")
	ctx := testCtx(t)
	node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	b.sriov, _ = emulatedNIC(t, node)
	pod := vfPod(podNS)
	vfBefore := sh(t, node, "ip", "-o", "link", "show", "ens1f0v0")
	mustContain(t, "VF before", vfBefore, "mtu 1500", "state DOWN", "link/ether 02:f0:00:00:00:00")

	iface, err := b.AttachVF(ctx, pod, "0000:5e:00.2")
	if err != nil {
		t.Fatal(err)
	}
	if iface.HostName != "ens1f0_0" || iface.PortType != ovsdb.TypeSystem || iface.MAC.String() != pod.MAC.String() || iface.VF == nil {
		t.Fatalf("AttachVF returned %+v; want the representor ens1f0_0 as a system port, the pod's MAC, a VF record", iface)
	}
	want := platform.VF{PCIAddress: "0000:5e:00.2", PF: "ens1f0", Index: 0, Representor: "ens1f0_0",
		HostName: "ens1f0v0", HostMAC: net.HardwareAddr{2, 0xf0, 0, 0, 0, 0}, HostMTU: 1500, HostUp: false}
	if got := *iface.VF; got.String() != want.String() || got.HostName != want.HostName || got.HostMAC.String() != want.HostMAC.String() || got.HostMTU != want.HostMTU || got.HostUp != want.HostUp || got.Representor != want.Representor {
		t.Errorf("VF record %+v, want %+v", got, want)
	}
	// The VF is gone from the node; the representor is an OVS-ready port.
	if got := linkNamesIn(t, node); got != "lo ens1f0_0 ens1f0_3 ens1f0v3" {
		t.Errorf("node links: %s, want lo ens1f0_0 ens1f0_3 ens1f0v3", got)
	}
	mustContain(t, "representor", sh(t, node, "ip", "-o", "link", "show", "ens1f0_0"), "NOARP", "mtu 1450", ",UP")
	// The pod's end is configured exactly as a veth's.
	mustContain(t, "pod link", sh(t, podNS, "ip", "-o", "link", "show", "eth0"), "mtu 1450", "UP", "link/ether 02:53:00:00:00:05")
	mustContain(t, "pod addresses", sh(t, podNS, "ip", "-o", "addr", "show", "dev", "eth0"), "inet 10.244.1.5/24", "inet6 fd00:10:244:1::5/64")
	mustContain(t, "pod routes", sh(t, podNS, "ip", "-4", "route", "show"), "default via 10.244.1.1 dev eth0")
	mustContain(t, "pod neighbours", sh(t, podNS, "ip", "neigh", "show", "nud", "permanent"), "10.244.1.1 dev eth0 lladdr 02:00:00:00:00:01 PERMANENT")
	mustContain(t, "pod offloads", sh(t, podNS, "ethtool", "-k", "eth0"), "tx-checksumming: off")
	if err := b.CheckVF(ctx, pod, *iface.VF); err != nil {
		t.Errorf("CheckVF after AttachVF: %v", err)
	}

	// The same VF for a second pod: busy, and nothing changes.
	other := vfPod(ovsdaemon.NewNetNS(t))
	other.Name, other.ContainerID = "web-1", "0123456789abcdef"
	if _, err := b.AttachVF(ctx, other, "0000:5e:00.2"); !errors.Is(err, platform.ErrVFUnavailable) || !strings.Contains(err.Error(), "not in the node's network namespace (in use by another pod?)") {
		t.Errorf("AttachVF of a VF in use: %v, want ErrVFUnavailable (in use)", err)
	}
	if got := linkNamesIn(t, other.NetNS); got != "lo" {
		t.Errorf("second pod's links: %s, want lo", got)
	}

	// Drift is reported.
	sh(t, podNS, "ip", "link", "set", "eth0", "mtu", "1400")
	sh(t, node, "ip", "link", "set", "ens1f0_0", "arp", "on")
	err = b.CheckVF(ctx, pod, *iface.VF)
	if err == nil {
		t.Fatal("CheckVF passed with the MTU changed and ARP on")
	}
	mustContain(t, "CheckVF error", err.Error(), "eth0 has MTU 1400, want 1450", "ens1f0_0 answers ARP")

	// DetachVF: the VF is back with its name, MAC, MTU and state.
	if err := b.DetachVF(ctx, pod.PodRef, *iface.VF); err != nil {
		t.Fatal(err)
	}
	if got := linkNamesIn(t, podNS); got != "lo" {
		t.Errorf("pod links after DetachVF: %s, want lo", got)
	}
	vfAfter := sh(t, node, "ip", "-o", "link", "show", "ens1f0v0")
	mustContain(t, "VF after", vfAfter, "mtu 1500", "state DOWN", "link/ether 02:f0:00:00:00:00")
	if err := b.DetachVF(ctx, pod.PodRef, *iface.VF); err != nil {
		t.Errorf("second DetachVF: %v", err)
	}
	// And it can be given to a pod again.
	if _, err := b.AttachVF(ctx, other, "0000:5e:00.2"); err != nil {
		t.Errorf("AttachVF after DetachVF: %v", err)
	}
}

// A VF that was up on the node comes back up.
func TestDetachVFRestoresUp(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	b.sriov, _ = emulatedNIC(t, node)
	sh(t, node, "ip", "link", "set", "ens1f0v3", "up", "mtu", "9000")
	pod := vfPod(podNS)
	b.sriov = testSriovHost(t, fakeDevlink{}, sriovfs.PF{PCI: "0000:5e:00.0", Name: "ens1f0", SwitchID: "x", NumVFs: 4, TotalVFs: 4, VFs: nic()[0].VFs})
	iface, err := b.AttachVF(ctx, pod, "0000:5e:00.5")
	if err != nil {
		t.Fatal(err)
	}
	if !iface.VF.HostUp || iface.VF.HostMTU != 9000 {
		t.Errorf("VF record %+v: want up, MTU 9000", iface.VF)
	}
	if err := b.DetachVF(ctx, pod.PodRef, *iface.VF); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "VF after", sh(t, node, "ip", "-o", "link", "show", "ens1f0v3"), "mtu 9000", ",UP", "link/ether 02:f0:00:00:00:03")
}

// TestFailedAttachVFLeavesNothing: a VF that cannot be had is a clear
// ErrVFUnavailable; a failure after the VF moved puts it back as it was.
func TestFailedAttachVFLeavesNothing(t *testing.T) {
	requirePrivileges(t)
	for _, tc := range []struct {
		name, pci string
		prepare   func(t *testing.T, node, podNS string)
		wantErr   string
		vfError   bool
	}{
		{name: "no such VF", pci: "0000:5e:07.2", wantErr: "no PCI device 0000:5e:07.2 on this node", vfError: true},
		{name: "VF without a netdev (vfio or another pod)", pci: "0000:5e:00.3", wantErr: "VF 0000:5e:00.3 has no network device on the node", vfError: true},
		{name: "VF without a representor", pci: "0000:5e:00.4", wantErr: "VF 2 of ens1f0 has no representor", vfError: true},
		{name: "VF index out of range", pci: "0000:5e:00.5", wantErr: "which has only 3 VFs enabled", vfError: true},
		{name: "netdev not on the node", pci: "0000:5e:00.2", prepare: func(t *testing.T, node, _ string) {
			sh(t, node, "ip", "link", "set", "ens1f0v0", "name", "elsewhere")
		}, wantErr: "netdev ens1f0v0 is not in the node's network namespace", vfError: true},
		{name: "interface name taken in the pod", pci: "0000:5e:00.2", prepare: func(t *testing.T, _, podNS string) {
			sh(t, podNS, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
		}, wantErr: "already has an interface eth0"},
		{name: "failure after the VF moved (IPv6 off in the pod)", pci: "0000:5e:00.2", prepare: func(t *testing.T, _, podNS string) {
			sh(t, podNS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
		}, wantErr: "add address fd00:10:244:1::5/64 to eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
			b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
			b.sriov, _ = emulatedNIC(t, node)
			if tc.prepare != nil {
				tc.prepare(t, node, podNS)
			}
			nodeBefore, podBefore := sh(t, node, "ip", "-o", "link", "show"), linkNamesIn(t, podNS)
			_, err := b.AttachVF(ctx, vfPod(podNS), tc.pci)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, platform.ErrVFUnavailable) != tc.vfError {
				t.Fatalf("AttachVF error %v, want one containing %q (ErrVFUnavailable: %v)", err, tc.wantErr, tc.vfError)
			}
			t.Logf("AttachVF failed as expected: %v", err)
			if got := sh(t, node, "ip", "-o", "link", "show"); got != nodeBefore {
				t.Errorf("node links after the failed AttachVF:\n%s\nwant\n%s", got, nodeBefore)
			}
			if got := linkNamesIn(t, podNS); got != podBefore {
				t.Errorf("pod links after the failed AttachVF: %s, want %s", got, podBefore)
			}
		})
	}
}

// Two pods given the same VF at once (a device plugin never does that,
// but a stale allocation might): one gets it, the other a clear error, and
// the loser's rollback leaves the winner's VF alone.
func TestAttachVFRace(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	node := ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	b.sriov, _ = emulatedNIC(t, node)
	pods := []platform.PodNetwork{vfPod(ovsdaemon.NewNetNS(t)), vfPod(ovsdaemon.NewNetNS(t))}
	pods[1].Name, pods[1].ContainerID = "web-1", "0123456789abcdef"
	errs := make(chan error, 2)
	for _, p := range pods {
		go func() {
			_, err := b.AttachVF(ctx, p, "0000:5e:00.2")
			errs <- err
		}()
	}
	var failed int
	for range pods {
		if err := <-errs; err != nil {
			failed++
			if !errors.Is(err, platform.ErrVFUnavailable) {
				t.Errorf("the losing AttachVF: %v, want ErrVFUnavailable", err)
			}
		}
	}
	if failed != 1 {
		t.Fatalf("%d of 2 AttachVF failed, want 1", failed)
	}
	got := linkNamesIn(t, pods[0].NetNS) + " | " + linkNamesIn(t, pods[1].NetNS)
	if got != "lo eth0 | lo" && got != "lo | lo eth0" {
		t.Errorf("pod links: %s, want the VF in exactly one pod", got)
	}
}

// A DEL that lost the VF's record (the agent crashed between AttachVF and
// storing it) still gives the VF back: the record travels on the VF as its
// alias, and the VF's own alias comes back too.
func TestDetachVFWithoutRecord(t *testing.T) {
	requirePrivileges(t)
	ctx := testCtx(t)
	node, podNS := ovsdaemon.NewNetNS(t), ovsdaemon.NewNetNS(t)
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	b.sriov, _ = emulatedNIC(t, node)
	sh(t, node, "ip", "link", "set", "ens1f0v0", "alias", "rack-7 port 3")
	pod := vfPod(podNS)
	iface, err := b.AttachVF(ctx, pod, "0000:5e:00.2")
	if err != nil {
		t.Fatal(err)
	}
	if iface.VF.HostAlias != "rack-7 port 3" {
		t.Errorf("recorded alias %q", iface.VF.HostAlias)
	}
	mustContain(t, "pod link", sh(t, podNS, "ip", "-o", "link", "show", "eth0"), `alias seine-vf:{"pci":"0000:5e:00.2"`)
	if err := b.DetachVF(ctx, pod.PodRef, platform.VF{PCIAddress: "0000:5e:00.2"}); err != nil {
		t.Fatal(err)
	}
	if got := linkNamesIn(t, podNS); got != "lo" {
		t.Errorf("pod links after DetachVF: %s, want lo", got)
	}
	mustContain(t, "VF after", sh(t, node, "ip", "-o", "link", "show", "ens1f0v0"), "mtu 1500", "state DOWN", "link/ether 02:f0:00:00:00:00", "alias rack-7 port 3")
	// Again: nothing carries a record any more, nothing to do.
	if err := b.DetachVF(ctx, pod.PodRef, platform.VF{PCIAddress: "0000:5e:00.2"}); err != nil {
		t.Errorf("second DetachVF: %v", err)
	}
	mustContain(t, "VF after the second DetachVF", sh(t, node, "ip", "-o", "link", "show", "ens1f0v0"), "alias rack-7 port 3")
}
