package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/seine-cni/seine/core/ipam"
)

// A changed pod CIDR. Kubernetes does not change a Node's podCIDR, but a
// Node deleted and registered again (or a cluster CIDR reconfigured) gets a
// new one while the node's pods still hold addresses from the old one,
// which another node may now own. The agent then:
//
//   - keeps IPAM on the old CIDRs (so DEL, GC and recovery work, and no
//     address of the new range is handed out alongside old pods);
//   - is not ready: ADD is refused (CNI code 11) and STATUS fails (code 50)
//     with a message naming both ranges and the pods still in the old one,
//     and kubelet reports the node's network not ready;
//   - once no pod holds an old address (the node was drained and the
//     remaining pods deleted: their DELs free them), ends Run with an error
//     wrapping ErrPodCIDRChanged, so the service manager (systemd, the
//     Windows SCM, the DaemonSet) starts it again, and it then allocates
//     from the new range.
//
// See README.md ("A changed pod CIDR") for the procedure.

// ErrPodCIDRChanged is wrapped by Run's error when the agent stops to adopt
// its Node's new pod CIDR.
var ErrPodCIDRChanged = errors.New("the node's pod CIDR changed")

// openIPAM opens IPAM on the Node's pod CIDRs or, while pods still hold
// addresses in other (old) ones, on those.
func (a *Agent) openIPAM(podCIDRs []netip.Prefix) (*ipam.Allocator, error) {
	dir := filepath.Join(a.cfg.StateDir, "ipam")
	alloc, err := ipam.Open(ipam.Options{Dir: dir, PodCIDRs: podCIDRs})
	var changed *ipam.CIDRChangedError
	if !errors.As(err, &changed) {
		return alloc, err
	}
	a.log.Error("the node's pod CIDR changed while pods hold addresses in the old one; allocating from neither until they are gone",
		"old", fmt.Sprint(changed.Recorded), "new", fmt.Sprint(podCIDRs), "pods", len(changed.Stale))
	return ipam.Open(ipam.Options{Dir: dir, PodCIDRs: changed.Recorded})
}

// podCIDRCheck compares the Node's pod CIDRs with the ones IPAM allocates
// from. When they differ it returns why the agent is not ready, or, once no
// pod holds an old address any more, the error Run ends with.
func (a *Agent) podCIDRCheck() (notReady string, restart error) {
	n, err := a.nodes.Get(a.cfg.NodeName)
	if err != nil {
		return "", nil // a Node event brings another look
	}
	ni, err := parseNode(n)
	if err != nil {
		return "", nil
	}
	have := a.ipam.PodCIDRs()
	if slices.Equal(ni.podCIDRs, have) {
		return "", nil
	}
	allocs := a.ipam.List()
	if len(allocs) == 0 {
		return "", fmt.Errorf("%w from %v to %v and no pod holds an address in the old one any more: restarting to allocate from the new one", ErrPodCIDRChanged, have, ni.podCIDRs)
	}
	var pods []string
	for i, al := range allocs {
		if i == 5 {
			pods = append(pods, fmt.Sprintf("and %d more", len(allocs)-5))
			break
		}
		pods = append(pods, al.PodNamespace+"/"+al.PodName)
	}
	return fmt.Sprintf("the node's pod CIDR changed from %v to %v while %d pods hold addresses in the old one (%s): "+
		"no pod is added until they are gone; drain the node and delete its remaining pods, and the agent restarts "+
		"with the new range (see core/agent/README.md, \"A changed pod CIDR\")",
		have, ni.podCIDRs, len(allocs), strings.Join(pods, ", ")), nil
}

// updateReady makes the agent ready unless its pod CIDR changed (see
// podCIDRCheck); it returns the error Run must end with, if any.
func (a *Agent) updateReady() error {
	why, restart := a.podCIDRCheck()
	switch {
	case restart != nil:
		a.setNotReady(restart.Error())
		return restart
	case why != "":
		if ok, cur := a.Ready(); ok || cur != why {
			a.log.Error("not ready", "reason", why)
		}
		a.setNotReady(why)
	default:
		a.ready.Store(true)
	}
	return nil
}
