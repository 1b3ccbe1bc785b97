package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/sriov"
	"github.com/seine-cni/seine/platform"
)

// SR-IOV VF pods (core/sriov/README.md): a pod whose CNI request carries a
// device ID gets that VF as its interface through the backend's
// platform.VFPodAttacher, and its representor becomes the pod's OVS port.
// Everything after the attach (the port, its external_ids, the flows) is
// the veth pod's path; only attach, detach and check differ.

// requestDeviceID is the VF device ID of an ADD, "" for a veth pod.
func requestDeviceID(r *cni.Request) (string, error) {
	if r.NetConf == nil {
		return "", nil
	}
	id, err := r.NetConf.VFDeviceID()
	if err != nil {
		return "", cni.Errorf(types.ErrInvalidNetworkConfig, "%v", err)
	}
	if id == "" {
		return "", nil
	}
	if err := platform.ValidPCIAddress(id); err != nil {
		return "", cni.Errorf(types.ErrInvalidNetworkConfig, "%v", err)
	}
	return id, nil
}

// attachVF gives the pod the VF at pci, with the MAC Seine chooses for it.
func (a *Agent) attachVF(ctx context.Context, pn platform.PodNetwork, pci string) (platform.PodInterface, error) {
	vfa, ok := a.backend.(platform.VFPodAttacher)
	if !ok {
		return platform.PodInterface{}, cni.Errorf(types.ErrUnsupportedField, "deviceID %s: %v", pci, platform.NotSupported("SR-IOV VF pod interfaces on this node"))
	}
	pn.MAC = sriov.PodMAC(pn.ContainerID, pn.IfName)
	iface, err := vfa.AttachVF(ctx, pn, pci)
	switch {
	case errors.Is(err, platform.ErrNoNetNS):
		return platform.PodInterface{}, cni.Errorf(types.ErrInvalidEnvironmentVariables, "network namespace %s: %v", pn.NetNS, err)
	case errors.Is(err, platform.ErrVFUnavailable):
		return platform.PodInterface{}, cni.Errorf(types.ErrInternal, "%v", err)
	case err != nil:
		return platform.PodInterface{}, fmt.Errorf("attach VF %s: %w", pci, err)
	case iface.VF == nil:
		return platform.PodInterface{}, fmt.Errorf("attach VF %s: the backend returned no VF record", pci)
	}
	return iface, nil
}

// detachInterface removes the pod's interface: a VF goes back to the
// node, a veth is deleted.
func (a *Agent) detachInterface(ctx context.Context, ref platform.PodRef, vf *platform.VF) error {
	if vf == nil {
		return a.backend.Detach(ctx, ref)
	}
	vfa, ok := a.backend.(platform.VFPodAttacher)
	if !ok {
		return fmt.Errorf("give %s back: %w", vf, platform.NotSupported("SR-IOV VF pod interfaces on this node"))
	}
	return vfa.DetachVF(ctx, ref, *vf)
}

// checkInterface is the backend's Check of the pod's interface.
func (a *Agent) checkInterface(ctx context.Context, pn platform.PodNetwork, vf *platform.VF) error {
	if vf == nil {
		return a.backend.Check(ctx, pn)
	}
	vfa, ok := a.backend.(platform.VFPodAttacher)
	if !ok {
		return fmt.Errorf("check %s: %w", vf, platform.NotSupported("SR-IOV VF pod interfaces on this node"))
	}
	return vfa.CheckVF(ctx, pn, *vf)
}

// vfFromExternalIDs is the VF record of a pod port, nil for a veth pod.
func vfFromExternalIDs(ids map[string]string) (*platform.VF, error) {
	s, ok := ids[sriov.ExternalID]
	if !ok {
		return nil, nil
	}
	vf, err := sriov.Decode(s)
	if err != nil {
		return nil, err
	}
	return &vf, nil
}

// otherConfigSetter is the part of *ovsdb.Client that turns on hw-offload.
type otherConfigSetter interface {
	SetOpenvSwitchOtherConfig(ctx context.Context, kv map[string]string) error
}

// setupSRIOV discovers the node's SR-IOV PFs (when the backend can) and,
// on a kernel-datapath node with a switchdev PF, sets
// other_config:hw-offload=true. Nothing here stops the agent: what it
// found, and any error, is logged and served at /nodeinfo.
func (a *Agent) setupSRIOV(ctx context.Context) {
	info := &sriov.NodeInfo{}
	defer a.sriovInfo.Store(info)
	d, ok := a.backend.(platform.SRIOVDiscoverer)
	if !ok {
		info.Reason = "this node's OS has no SR-IOV switchdev support"
		return
	}
	pfs, err := d.DiscoverSRIOV(ctx)
	if err != nil {
		info.Error = err.Error()
		a.log.Warn("SR-IOV discovery failed", "err", err)
	}
	info.PFs = pfs
	_, canAttach := a.backend.(platform.VFPodAttacher)
	for _, pf := range pfs {
		info.VFPods = info.VFPods || pf.Switchdev() && canAttach
		a.log.Info("SR-IOV PF", "name", pf.Name, "pci", pf.PCIAddress, "eswitch", pf.EswitchMode, "vfs", pf.NumVFs, "error", pf.Error)
	}
	info.HWOffload, info.Reason = sriov.HWOffload(a.cfg.datapath(), pfs)
	if info.HWOffload {
		s, ok := a.db.(otherConfigSetter)
		if !ok {
			info.HWOffload, info.Reason = false, "the OVSDB client cannot set other_config"
		} else if err := s.SetOpenvSwitchOtherConfig(ctx, map[string]string{"hw-offload": "true"}); err != nil {
			info.HWOffload, info.Error = false, fmt.Sprintf("set other_config:hw-offload: %v", err)
		}
	}
	if len(pfs) > 0 {
		a.log.Info("OVS hardware offload", "hw_offload", info.HWOffload, "reason", info.Reason)
	}
}

// serveNodeInfo answers GET /nodeinfo: the node's SR-IOV capabilities.
func (a *Agent) serveNodeInfo(w http.ResponseWriter, _ *http.Request) {
	info := a.sriovInfo.Load()
	if info == nil {
		http.Error(w, "node not set up yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"node": a.cfg.NodeName, "sriov": info})
}
