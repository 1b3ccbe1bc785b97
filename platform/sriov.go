package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
)

// SR-IOV switchdev offload (Linux only). A pod may ask for a Virtual
// Function of an SR-IOV NIC as its interface (the SR-IOV device plugin
// allocates one and the runtime hands its PCI address to the CNI). With the
// NIC's embedded switch in switchdev mode every VF has a representor netdev
// on the node: the VF goes into the pod, its representor is plugged into
// br-int as the pod's OVS port, and the pipeline treats that port exactly
// as the host end of a veth. See core/sriov/README.md.

// VF is one Virtual Function given to a pod, and what the node had before.
// The core keeps it with the pod's OVS port (external_ids) and hands it
// back to DetachVF, which restores the VF's host name, MAC, MTU and state.
type VF struct {
	// PCIAddress is the VF's PCI address in the domain:bus:device.function
	// form the device plugin allocates ("0000:03:00.2").
	PCIAddress string `json:"pci"`
	// PF is the physical function's netdev (the uplink representor), Index
	// the VF's number on it, Representor the VF representor's netdev.
	PF          string `json:"pf,omitempty"`
	Index       int    `json:"index"`
	Representor string `json:"rep,omitempty"`
	// HostName, HostMAC, HostMTU and HostUp are the VF netdev as the node
	// had it before AttachVF moved it into the pod.
	HostName string           `json:"name,omitempty"`
	HostMAC  net.HardwareAddr `json:"mac,omitempty"`
	HostMTU  int              `json:"mtu,omitempty"`
	HostUp   bool             `json:"up,omitempty"`
	// HostAlias is the VF netdev's alias (ifalias) before AttachVF, which
	// keeps a copy of this record on the VF while it is in the pod.
	HostAlias string `json:"alias,omitempty"`
}

func (v VF) String() string {
	if v.PF == "" {
		return "VF " + v.PCIAddress
	}
	return fmt.Sprintf("VF %s (%s vf %d)", v.PCIAddress, v.PF, v.Index)
}

var pciAddressRE = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$`)

// ValidPCIAddress checks a VF device ID: a full, lower-case PCI address
// ("0000:03:00.2"), as the SR-IOV device plugin allocates it.
func ValidPCIAddress(s string) error {
	if !pciAddressRE.MatchString(s) {
		return fmt.Errorf("device ID %q is not a PCI address like 0000:03:00.2", s)
	}
	return nil
}

// VFPodAttacher is a capability: a pod's interface may be an SR-IOV VF.
//
// AttachVF moves the VF with PCI address pciAddress into the pod's network
// namespace as pod.IfName with pod's MAC, MTU, addresses, gateway neighbour
// and routes, readies its representor for OVS and returns the representor
// as PodInterface.HostName with PodInterface.VF set (the record DetachVF
// needs). A VF that does not exist, is not in switchdev mode, has no
// representor, or whose netdev is not on the node (in use by another pod,
// bound to a userspace driver) is an error wrapping ErrVFUnavailable; a
// failed AttachVF leaves the VF on the node as it was.
//
// DetachVF returns the VF to the node under its old name with its old MAC,
// MTU and state; a VF already back is success. Given only the PCI address
// (the record was lost: a crash between AttachVF and storing it), it finds
// the record the backend keeps on the VF itself. CheckVF reports how the pod
// differs from pod without changing anything.
//
// Find it by type assertion; a backend without it cannot give pods VFs
// (the core answers such a request with an error wrapping ErrNotSupported).
type VFPodAttacher interface {
	AttachVF(ctx context.Context, pod PodNetwork, pciAddress string) (PodInterface, error)
	DetachVF(ctx context.Context, ref PodRef, vf VF) error
	CheckVF(ctx context.Context, pod PodNetwork, vf VF) error
}

// ErrVFUnavailable is wrapped by AttachVF's error when the asked VF cannot
// be given to the pod (absent, not switchdev, no representor, busy).
var ErrVFUnavailable = errors.New("SR-IOV VF unavailable")

// SwitchdevPF is one physical function of an SR-IOV NIC found on the node.
type SwitchdevPF struct {
	// Name is the PF's netdev (the uplink representor in switchdev mode),
	// PCIAddress its PCI address.
	Name       string `json:"name"`
	PCIAddress string `json:"pciAddress"`
	// EswitchMode is devlink's mode of the NIC's embedded switch:
	// "switchdev", "legacy", or "" when devlink could not say.
	EswitchMode string `json:"eswitchMode"`
	// NumVFs is sriov_numvfs, TotalVFs sriov_totalvfs.
	NumVFs   int `json:"numVFs"`
	TotalVFs int `json:"totalVFs"`
	// Error says why the PF cannot be used, if it cannot.
	Error string `json:"error,omitempty"`
}

// Switchdev reports whether the PF's VFs can be given to pods.
func (p SwitchdevPF) Switchdev() bool { return p.EswitchMode == "switchdev" && p.Error == "" }

// SRIOVDiscoverer is a capability: list the node's SR-IOV physical
// functions with their embedded switch mode. Find it by type assertion.
type SRIOVDiscoverer interface {
	DiscoverSRIOV(ctx context.Context) ([]SwitchdevPF, error)
}
