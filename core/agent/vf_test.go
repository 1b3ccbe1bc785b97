package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/sriov"
	"github.com/seine-cni/seine/platform/platformtest"
)

// vfBackend is the fake backend with SR-IOV VFs.
type vfBackend struct {
	*platformtest.FakeBackend
	*platformtest.FakeVFs
}

// vfReq is an ADD (or other command) asking for the VF at pci, as Multus
// and libcni pass it (runtimeConfig.deviceID).
func (w *world) vfReq(cmd cni.Command, id, name, pci string) *cni.Request {
	r := w.req(cmd, id, name)
	r.NetConf = &cni.NetConf{RuntimeConfig: map[string]json.RawMessage{"deviceID": json.RawMessage(`"` + pci + `"`)}}
	return r
}

func TestVFPodAddCheckDel(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.vfs = platformtest.NewFakeVFs("0000:5e:00.2", "0000:5e:00.3")
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()

	res, err := a.Add(ctx, w.vfReq(cni.CmdAdd, "c1", "web-0", "0000:5e:00.2"))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	mac := sriov.PodMAC("c1", "eth0")
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.1.2/24" || res.Interfaces[0].Name != "pf0_0" || res.Interfaces[1].Mac != mac.String() {
		t.Errorf("result: IPs %v interfaces %+v; want 10.244.1.2/24 on representor pf0_0, pod MAC %s", res.IPs, res.Interfaces, mac)
	}
	if got := w.vfs.Dump(); got != "0000:5e:00.2 default/web-0 (container c1, eth0)\n" {
		t.Errorf("VFs in use:\n%s", got)
	}
	if got := w.backend.FakePodAttacher.Dump(); got != "" {
		t.Errorf("a veth was made too:\n%s", got)
	}
	// The representor is the pod's OVS port, with the VF's record.
	info, err := w.db.GetPort(ctx, "pf0_0")
	if err != nil {
		t.Fatal(err)
	}
	vf, err := sriov.Decode(info.ExternalIDs[sriov.ExternalID])
	if err != nil || vf.PCIAddress != "0000:5e:00.2" || vf.HostName != "pf0v0" || info.ExternalIDs[extName] != "web-0" || info.ExternalIDs[extMAC] != mac.String() {
		t.Errorf("port external_ids %v (VF record %+v, %v)", info.ExternalIDs, vf, err)
	}
	// The pipeline treats it as any pod port.
	if n := w.sw.count(pipeline.CategoryPod, pipeline.PodID("default", "web-0")); n == 0 {
		t.Errorf("no pod flows after ADD:\n%s", w.sw.text())
	}
	if err := a.Check(ctx, w.vfReq(cni.CmdCheck, "c1", "web-0", "0000:5e:00.2")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// A retried ADD answers the same and attaches nothing.
	before := strings.Count(w.vfs.Log(), "AttachVF")
	if res2, err := a.Add(ctx, w.vfReq(cni.CmdAdd, "c1", "web-0", "0000:5e:00.2")); err != nil || res2.IPs[0].Address.String() != "10.244.1.2/24" {
		t.Errorf("retried ADD: %v, %v", res2, err)
	}
	if after := strings.Count(w.vfs.Log(), "AttachVF"); after != before {
		t.Errorf("retried ADD called AttachVF again:\n%s", w.vfs.Log())
	}

	// Busy and unknown VFs: clear errors, nothing of the new pod is left.
	for _, tc := range []struct{ pci, want string }{
		{"0000:5e:00.2", "in use by pod default/web-0"},
		{"0000:5e:09.2", "no PCI device 0000:5e:09.2"},
	} {
		_, err := a.Add(ctx, w.vfReq(cni.CmdAdd, "c2", "web-1", tc.pci))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "SR-IOV VF unavailable") {
			t.Errorf("ADD on VF %s: %v, want an error containing %q", tc.pci, err, tc.want)
		}
		if ports := w.db.podPorts(); len(ports) != 1 {
			t.Errorf("ports after the failed ADD: %v", ports)
		}
		if als := a.ipam.List(); len(als) != 1 {
			t.Errorf("IPAM after the failed ADD: %v", als)
		}
	}
	// A malformed device ID is the network configuration's fault.
	if _, err := a.Add(ctx, w.vfReq(cni.CmdAdd, "c3", "web-2", "5e:00.2")); cniCode(err) != types.ErrInvalidNetworkConfig {
		t.Errorf("ADD with a malformed device ID: %v (code %d), want code %d", err, cniCode(err), types.ErrInvalidNetworkConfig)
	}

	// DEL gives the VF back and leaves nothing; again is no error.
	if err := a.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := w.vfs.Dump() + w.leftovers(a); got != "" {
		t.Errorf("left after DEL:\n%s", got)
	}
	if !strings.Contains(w.vfs.Log(), "DetachVF 0000:5e:00.2 default/web-0 (container c1, eth0) -> pf0v0 back") {
		t.Errorf("VF log:\n%s", w.vfs.Log())
	}
	if err := a.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

// A failure after the VF was attached gives it back.
func TestVFPodFailedAddGivesVFBack(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.vfs = platformtest.NewFakeVFs("0000:5e:00.2")
	a, _ := w.start()
	waitReady(t, a)
	w.db.FailNext("EnsurePort", errors.New("ovsdb-server went away"))
	if _, err := a.Add(context.Background(), w.vfReq(cni.CmdAdd, "c1", "web-0", "0000:5e:00.2")); err == nil || !strings.Contains(err.Error(), "went away") {
		t.Fatalf("ADD: %v, want the OVSDB error", err)
	}
	if got := w.vfs.Dump() + w.leftovers(a); got != "" {
		t.Errorf("left after the failed ADD:\n%s\nVF log:\n%s", got, w.vfs.Log())
	}
}

// On a backend without the capability (Windows), a VF request is refused
// as unsupported and leaves nothing.
func TestVFPodNotSupported(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	_, err := a.Add(context.Background(), w.vfReq(cni.CmdAdd, "c1", "web-0", "0000:5e:00.2"))
	if cniCode(err) != types.ErrUnsupportedField || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("ADD: %v (code %d), want code %d saying not supported", err, cniCode(err), types.ErrUnsupportedField)
	}
	if got := w.leftovers(a); got != "" {
		t.Errorf("left after the refused ADD:\n%s", got)
	}
	if info := a.sriovInfo.Load(); info == nil || info.VFPods || info.HWOffload {
		t.Errorf("node info %+v, want no VF pods, no offload", info)
	}
}

// A restarted agent keeps a VF pod (its record comes from the port) and
// its DEL gives the VF back.
func TestVFPodRecovered(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.vfs = platformtest.NewFakeVFs("0000:5e:00.2")
	a, stop := w.start()
	waitReady(t, a)
	ctx := context.Background()
	if _, err := a.Add(ctx, w.vfReq(cni.CmdAdd, "c1", "web-0", "0000:5e:00.2")); err != nil {
		t.Fatal(err)
	}
	stop()
	b, _ := w.start()
	waitReady(t, b)
	if err := b.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); err != nil {
		t.Errorf("CHECK after the restart: %v", err)
	}
	if err := b.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
		t.Fatal(err)
	}
	if got := w.vfs.Dump() + w.leftovers(b); got != "" {
		t.Errorf("left after DEL:\n%s", got)
	}
}

// Node info: the switchdev PF is reported, VF pods possible, hw-offload not
// set on the netdev datapath (and the reason says so); a legacy PF allows
// no VF pods.
func TestVFNodeInfo(t *testing.T) {
	for _, mode := range []string{"switchdev", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, twoNodesSlice()...)
			w.vfs = platformtest.NewFakeVFs("0000:5e:00.2")
			w.vfs.SetEswitchMode(mode)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			w.cfg.HealthAddress = addr
			a, _ := w.start()
			waitReady(t, a)
			resp, err := http.Get("http://" + addr + "/nodeinfo")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got struct {
				Node  string         `json:"node"`
				SRIOV sriov.NodeInfo `json:"sriov"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("/nodeinfo %s: %v", body, err)
			}
			s := got.SRIOV
			if got.Node != "node-1" || len(s.PFs) != 1 || s.PFs[0].EswitchMode != mode || s.VFPods != (mode == "switchdev") || s.HWOffload {
				t.Errorf("/nodeinfo: %s", body)
			}
			wantReason := `datapath "netdev": only the kernel (system) datapath offloads flows to the NIC`
			if mode == "legacy" {
				wantReason = "no SR-IOV PF in switchdev mode on this node"
			}
			if s.Reason != wantReason {
				t.Errorf("reason %q, want %q", s.Reason, wantReason)
			}
			if strings.Contains(w.db.Log(), "hw-offload") {
				t.Errorf("hw-offload written to OVSDB:\n%s", w.db.Log())
			}
		})
	}
}

// A DEL whose VF record is lost (the agent died between attaching the VF
// and adding its OVS port) still gives the VF back: the DEL's device ID
// names it and the backend finds the rest on the VF.
func TestVFPodDelWithoutRecord(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.vfs = platformtest.NewFakeVFs("0000:5e:00.2")
	a, stop := w.start()
	waitReady(t, a)
	ctx := context.Background()
	if _, err := a.Add(ctx, w.vfReq(cni.CmdAdd, "c1", "web-0", "0000:5e:00.2")); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := w.db.DeletePort(ctx, "pf0_0"); err != nil { // as if never added
		t.Fatal(err)
	}
	b, _ := w.start()
	waitReady(t, b)
	if got := w.vfs.Dump(); got == "" {
		t.Fatal("the VF was given back before DEL; the test needs it still in the pod")
	}
	if err := b.Del(ctx, w.vfReq(cni.CmdDel, "c1", "web-0", "0000:5e:00.2")); err != nil {
		t.Fatal(err)
	}
	if got := w.vfs.Dump() + w.leftovers(b); got != "" {
		t.Errorf("left after DEL:\n%s\nVF log:\n%s", got, w.vfs.Log())
	}
}
