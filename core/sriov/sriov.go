// Package sriov is the platform-neutral part of SR-IOV switchdev offload:
// where a pod's VF device ID comes from, the MAC Seine gives a VF, how the
// VF's record is kept with the pod's OVS port, and whether ovs-vswitchd is
// told to offload flows to the NIC. The OS part (moving the VF, finding its
// representor) is the backend's platform.VFPodAttacher; the agent wires
// both. See README.md.
package sriov

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// ExternalID is the key of the VF record on a VF pod's OVS port.
const ExternalID = "sriov-vf"

// Encode renders a VF record for ExternalID.
func Encode(vf platform.VF) string {
	b, err := json.Marshal(vf)
	if err != nil {
		panic(err) // plain strings, ints and a byte slice always marshal
	}
	return string(b)
}

// Decode parses a VF record written by Encode.
func Decode(s string) (platform.VF, error) {
	var vf platform.VF
	if err := json.Unmarshal([]byte(s), &vf); err != nil {
		return platform.VF{}, fmt.Errorf("VF record %q: %w", s, err)
	}
	if err := platform.ValidPCIAddress(vf.PCIAddress); err != nil {
		return platform.VF{}, fmt.Errorf("VF record %q: %w", s, err)
	}
	if vf.HostName == "" || vf.Representor == "" {
		return platform.VF{}, fmt.Errorf("VF record %q: no host name or representor", s)
	}
	return vf, nil
}

// PodMAC is the MAC Seine gives a pod's VF: locally administered, unicast,
// derived from the attachment (so a retried ADD sets the same one), never
// the MAC the VF had on the node. A veth pod keeps the kernel's random MAC;
// a VF's MAC is whatever the last user or the driver left, so Seine sets it.
func PodMAC(containerID, ifName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// HWOffload says whether ovs-vswitchd should be told
// other_config:hw-offload=true, and why. Only the kernel datapath offloads
// flows to a NIC (through TC flower); the userspace netdev datapath has no
// TC offload of its own switchdev PFs' VFs (its rte_flow offload is for
// DPDK ports), and without a switchdev PF there is nothing to offload to.
func HWOffload(datapath ovsdb.DatapathType, pfs []platform.SwitchdevPF) (bool, string) {
	n := 0
	for _, pf := range pfs {
		if pf.Switchdev() {
			n++
		}
	}
	switch {
	case n == 0:
		return false, "no SR-IOV PF in switchdev mode on this node"
	case datapath != "" && datapath != ovsdb.DatapathSystem:
		return false, fmt.Sprintf("datapath %q: only the kernel (system) datapath offloads flows to the NIC", datapath)
	}
	return true, fmt.Sprintf("%d SR-IOV PF(s) in switchdev mode and the kernel datapath", n)
}

// NodeInfo is what the agent reports about the node's SR-IOV hardware
// (GET /nodeinfo on its health endpoint).
type NodeInfo struct {
	// PFs are the node's SR-IOV physical functions.
	PFs []platform.SwitchdevPF `json:"pfs"`
	// VFPods says whether this node can give pods VFs (a backend with the
	// capability and at least one PF in switchdev mode).
	VFPods bool `json:"vfPods"`
	// HWOffload is other_config:hw-offload as the agent set it; Reason why.
	HWOffload bool   `json:"hwOffload"`
	Reason    string `json:"reason"`
	// Error is set when discovery failed.
	Error string `json:"error,omitempty"`
}
