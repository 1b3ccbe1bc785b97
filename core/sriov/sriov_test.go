package sriov

import (
	"net"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

func TestHWOffload(t *testing.T) {
	switchdev := platform.SwitchdevPF{Name: "ens1f0", EswitchMode: "switchdev"}
	legacy := platform.SwitchdevPF{Name: "ens1f1", EswitchMode: "legacy", Error: "eswitch mode \"legacy\", not switchdev"}
	for _, tc := range []struct {
		datapath ovsdb.DatapathType
		pfs      []platform.SwitchdevPF
		want     bool
		reason   string
	}{
		{ovsdb.DatapathSystem, []platform.SwitchdevPF{legacy, switchdev}, true, "1 SR-IOV PF(s) in switchdev mode and the kernel datapath"},
		{"", []platform.SwitchdevPF{switchdev}, true, "kernel datapath"},
		{ovsdb.DatapathNetdev, []platform.SwitchdevPF{switchdev}, false, `datapath "netdev"`},
		{ovsdb.DatapathSystem, []platform.SwitchdevPF{legacy}, false, "no SR-IOV PF in switchdev mode"},
		{ovsdb.DatapathSystem, nil, false, "no SR-IOV PF in switchdev mode"},
	} {
		got, reason := HWOffload(tc.datapath, tc.pfs)
		if got != tc.want || !strings.Contains(reason, tc.reason) {
			t.Errorf("HWOffload(%q, %d PFs) = %v %q, want %v %q", tc.datapath, len(tc.pfs), got, reason, tc.want, tc.reason)
		}
	}
}

func TestRecord(t *testing.T) {
	vf := platform.VF{PCIAddress: "0000:5e:00.2", PF: "ens1f0", Index: 0, Representor: "ens1f0_0",
		HostName: "ens1f0v0", HostMAC: net.HardwareAddr{2, 0xf0, 0, 0, 0, 1}, HostMTU: 1500, HostUp: true}
	s := Encode(vf)
	got, err := Decode(s)
	if err != nil || Encode(got) != s {
		t.Fatalf("Decode(Encode) = %+v, %v from %s", got, err, s)
	}
	for _, bad := range []string{`{`, `{"pci":"x","name":"a","rep":"b"}`, `{"pci":"0000:5e:00.2","rep":"b"}`} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%s) succeeded", bad)
		}
	}
}

func TestPodMAC(t *testing.T) {
	a, b := PodMAC("c1", "eth0"), PodMAC("c1", "eth1")
	if a.String() == b.String() || a.String() != PodMAC("c1", "eth0").String() {
		t.Errorf("PodMAC: %s %s: want stable and distinct per attachment", a, b)
	}
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("PodMAC %s: want unicast, locally administered", a)
	}
}

func TestValidPCIAddress(t *testing.T) {
	for s, ok := range map[string]bool{"0000:03:00.2": true, "0000:5e:1f.7": true, "03:00.2": false, "0000:03:00.8": false, "0000:03:20.2": false, "0000:5E:00.2": false, "": false} {
		if err := platform.ValidPCIAddress(s); (err == nil) != ok {
			t.Errorf("ValidPCIAddress(%q) = %v, want ok=%v", s, err, ok)
		}
	}
}
