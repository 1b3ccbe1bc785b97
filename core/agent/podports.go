package agent

import "github.com/seine-cni/seine/platform"

// PodPortMatch selects the bridge's pod ports by their external_ids
// (ovsdb.Client.ListPorts).
func PodPortMatch() map[string]string { return map[string]string{extType: extTypePod} }

// PodPort is the pod attachment a pod port of the bridge stands for, read
// from its external_ids (the agent's source of truth), and the pod's VF when
// it has one (nil for a veth pod). seinectl node-cleanup uses it to remove
// pods' interfaces once the agent is gone.
func PodPort(externalIDs map[string]string) (platform.PodRef, *platform.VF, error) {
	vf, err := vfFromExternalIDs(externalIDs)
	return refFromExternalIDs(externalIDs), vf, err
}
