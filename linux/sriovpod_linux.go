package linux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/seine-cni/seine/platform"
)

// AttachVF implements platform.VFPodAttacher: the VF's netdev goes into
// the pod's namespace as pod.IfName, configured as a veth's pod end is
// (configurePodLink), and its representor is readied for OVS as a veth's
// host end is (prepareOVSPort). On failure the VF is back on the node as it
// was. See README.md, "SR-IOV".
func (b *Backend) AttachVF(ctx context.Context, pod platform.PodNetwork, pci string) (platform.PodInterface, error) {
	if err := pod.Validate(); err != nil {
		return platform.PodInterface{}, err
	}
	what := fmt.Sprintf("attach pod %s to VF %s", pod.PodRef, pci)
	b.vfMu.Lock()
	defer b.vfMu.Unlock()
	podNS, err := openPodNetNS(pod.NetNS)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("%s: %w", what, err)
	}
	defer podNS.Close()
	vfi, err := b.sriov.lookupVF(pci)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("%s: %w", what, err)
	}
	unavailable := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", what, platform.ErrVFUnavailable, fmt.Sprintf(format, args...))
	}
	if vfi.Netdev == "" {
		return platform.PodInterface{}, unavailable("VF %s has no network device on the node: it is in use by another pod or bound to a userspace driver (vfio-pci)", pci)
	}
	vfLink, err := b.host.nl.LinkByName(vfi.Netdev)
	if isNotFound(err) {
		return platform.PodInterface{}, unavailable("VF %s's netdev %s is not in the node's network namespace (in use by another pod?)", pci, vfi.Netdev)
	}
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("%s: look up %s: %w", what, vfi.Netdev, err)
	}
	repLink, err := b.host.nl.LinkByName(vfi.Representor)
	if isNotFound(err) {
		return platform.PodInterface{}, unavailable("representor %s of VF %s is not in the node's network namespace", vfi.Representor, pci)
	}
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("%s: look up %s: %w", what, vfi.Representor, err)
	}
	if _, err := podNS.nl.LinkByName(pod.IfName); err == nil {
		return platform.PodInterface{}, fmt.Errorf("%s: %s already has an interface %s", what, podNS, pod.IfName)
	}
	if err := ctxErr(ctx, what); err != nil {
		return platform.PodInterface{}, err
	}
	va := vfLink.Attrs()
	vf := platform.VF{
		PCIAddress: pci, PF: vfi.PF, Index: vfi.Index, Representor: vfi.Representor,
		HostName: va.Name, HostMAC: slices.Clone(va.HardwareAddr), HostMTU: va.MTU, HostUp: va.Flags&net.FlagUp != 0,
		HostAlias: va.Alias,
	}
	log := b.log.With("pod", pod.Namespace+"/"+pod.Name, "container", pod.ContainerID, "vf", pci, "representor", vf.Representor)
	iface, err := b.attachVF(pod, podNS, vfLink, repLink, vf)
	if err != nil {
		if rerr := b.returnVF(podNS, vf, pod.IfName); rerr != nil {
			err = errors.Join(err, fmt.Errorf("give the VF back to the node: %w", rerr))
		}
		return platform.PodInterface{}, fmt.Errorf("%s: %w", what, err)
	}
	log.Info("attached pod to VF", "ips", fmt.Sprint(pod.IPs), "mac", iface.MAC.String())
	return iface, nil
}

func (b *Backend) attachVF(pod platform.PodNetwork, podNS *netNS, vfLink, repLink netlink.Link, vf platform.VF) (platform.PodInterface, error) {
	tmp := vfTempName(vf.PCIAddress)
	// The record travels with the VF (its alias), for a DEL that lost it.
	if alias := vfAlias(vf); alias != "" {
		if err := b.host.nl.LinkSetAlias(vfLink, alias); err != nil {
			return platform.PodInterface{}, fmt.Errorf("set %s alias: %w", vf.HostName, err)
		}
	}
	// Renamed on the node first: neither name may clash in the pod.
	if err := b.host.nl.LinkSetDown(vfLink); err != nil {
		return platform.PodInterface{}, fmt.Errorf("set %s down: %w", vf.HostName, err)
	}
	if err := b.host.nl.LinkSetName(vfLink, tmp); err != nil {
		return platform.PodInterface{}, fmt.Errorf("rename %s to %s: %w", vf.HostName, tmp, err)
	}
	if err := b.host.nl.LinkSetNsFd(vfLink, int(podNS.ns.Fd())); err != nil {
		return platform.PodInterface{}, fmt.Errorf("move %s into %s: %w", tmp, podNS, err)
	}
	link, err := podNS.nl.LinkByName(tmp)
	if err != nil {
		return platform.PodInterface{}, fmt.Errorf("find %s in %s: %w", tmp, podNS, err)
	}
	if err := podNS.nl.LinkSetName(link, pod.IfName); err != nil {
		return platform.PodInterface{}, fmt.Errorf("rename %s to %s: %w", tmp, pod.IfName, err)
	}
	if pod.MAC != nil {
		if err := podNS.nl.LinkSetHardwareAddr(link, pod.MAC); err != nil {
			return platform.PodInterface{}, fmt.Errorf("set %s MAC %s: %w", pod.IfName, pod.MAC, err)
		}
	}
	if pod.MTU != 0 {
		if err := podNS.nl.LinkSetMTU(link, pod.MTU); err != nil {
			return platform.PodInterface{}, fmt.Errorf("set %s MTU %d: %w", pod.IfName, pod.MTU, err)
		}
	}
	podLink, err := configurePodLink(pod, podNS, b.datapath)
	if err != nil {
		return platform.PodInterface{}, err
	}
	if pod.MTU != 0 {
		if err := b.host.nl.LinkSetMTU(repLink, pod.MTU); err != nil {
			return platform.PodInterface{}, fmt.Errorf("set representor %s MTU %d: %w", vf.Representor, pod.MTU, err)
		}
	}
	if err := b.prepareOVSPort(repLink); err != nil {
		return platform.PodInterface{}, err
	}
	if repLink, err = b.host.nl.LinkByName(vf.Representor); err != nil {
		return platform.PodInterface{}, fmt.Errorf("find %s: %w", vf.Representor, err)
	}
	iface := podInterface(pod, repLink, podLink)
	iface.VF = &vf
	return iface, nil
}

// vfAliasPrefix starts the alias a VF carries while a pod has it: the
// prefix and the VF's record as JSON.
const vfAliasPrefix = "seine-vf:"

// vfAlias is the alias recording vf on the VF itself, "" when the record
// does not fit (IFALIASZ is 256 bytes with its NUL).
func vfAlias(vf platform.VF) string {
	b, err := json.Marshal(vf)
	if err != nil || len(vfAliasPrefix)+len(b) > 255 {
		return ""
	}
	return vfAliasPrefix + string(b)
}

// vfFromAlias reads the record a VF carries, for the VF at pci.
func vfFromAlias(alias, pci string) (platform.VF, bool) {
	s, ok := strings.CutPrefix(alias, vfAliasPrefix)
	if !ok {
		return platform.VF{}, false
	}
	var vf platform.VF
	if err := json.Unmarshal([]byte(s), &vf); err != nil || vf.PCIAddress != pci || vf.HostName == "" {
		return platform.VF{}, false
	}
	return vf, true
}

// vfTempName is the name a VF has while it moves between namespaces.
func vfTempName(pci string) string {
	sum := sha256.Sum256([]byte(pci))
	return "svf" + hex.EncodeToString(sum[:6])
}

// DetachVF implements platform.VFPodAttacher: the VF comes back to the
// node under vf.HostName with its MAC, MTU and state. It is found in the
// pod's namespace (as ref.IfName) or, when that namespace is gone (the
// kernel then returns a VF to the initial namespace) or the VF was already
// returned, on the node by its names or its PCI address. A VF found
// nowhere is logged and Detach succeeds: nothing is left to undo.
func (b *Backend) DetachVF(_ context.Context, ref platform.PodRef, vf platform.VF) error {
	if err := ref.Validate(); err != nil {
		return err
	}
	if err := platform.ValidPCIAddress(vf.PCIAddress); err != nil {
		return fmt.Errorf("detach pod %s: %w", ref, err)
	}
	b.vfMu.Lock()
	defer b.vfMu.Unlock()
	var podNS *netNS
	if ref.NetNS != "" {
		n, err := openPodNetNS(ref.NetNS)
		switch {
		case errors.Is(err, platform.ErrNoNetNS):
		case err != nil:
			return fmt.Errorf("detach pod %s from %s: %w", ref, vf, err)
		default:
			podNS = n
			defer n.Close()
		}
	}
	if vf.HostName == "" {
		found, err := b.recordOnVF(podNS, vf.PCIAddress, ref.IfName)
		if err != nil {
			return fmt.Errorf("detach pod %s from %s: %w", ref, vf, err)
		}
		if found == nil {
			b.log.Warn("VF with no record found in the pod or on the node; nothing to give back", "vf", vf.String(), "pod", ref.String())
			return nil
		}
		vf = *found
	}
	if err := b.returnVF(podNS, vf, ref.IfName); err != nil {
		return fmt.Errorf("detach pod %s from %s: %w", ref, vf, err)
	}
	return nil
}

// recordOnVF finds the VF at pci, in podNS (nil when gone) as podName or
// its temporary name, or on the node by its temporary name or through
// sysfs, and returns the record its alias carries; nil when there is none.
func (b *Backend) recordOnVF(podNS *netNS, pci, podName string) (*platform.VF, error) {
	tmp := vfTempName(pci)
	type place struct {
		nl   *netlink.Handle
		name string
	}
	var places []place
	if podNS != nil {
		places = append(places, place{podNS.nl, podName}, place{podNS.nl, tmp})
	}
	places = append(places, place{b.host.nl, tmp})
	if vfi, err := b.sriov.lookupVF(pci); err == nil && vfi.Netdev != "" {
		places = append(places, place{b.host.nl, vfi.Netdev})
	}
	for _, p := range places {
		link, err := p.nl.LinkByName(p.name)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", p.name, err)
		}
		if vf, ok := vfFromAlias(link.Attrs().Alias, pci); ok {
			return &vf, nil
		}
	}
	return nil, nil
}

// returnVF gives the VF back to the node: from podNS (nil when it is
// gone) under podName or its temporary name, else wherever it is on the
// node, and restores its name, MAC, MTU and state. A VF the kernel
// returned from a deleted namespace keeps the pod's name; sysfs finds it.
func (b *Backend) returnVF(podNS *netNS, vf platform.VF, podName string) error {
	tmp := vfTempName(vf.PCIAddress)
	if podNS != nil {
		for _, name := range []string{podName, tmp} {
			link, err := podNS.nl.LinkByName(name)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("look up %s in %s: %w", name, podNS, err)
			}
			if err := podNS.nl.LinkSetDown(link); err != nil {
				return fmt.Errorf("set %s down in %s: %w", name, podNS, err)
			}
			if name != tmp {
				if err := podNS.nl.LinkSetName(link, tmp); err != nil {
					return fmt.Errorf("rename %s to %s in %s: %w", name, tmp, podNS, err)
				}
			}
			if err := b.moveToHost(podNS, link); err != nil {
				return fmt.Errorf("move %s out of %s: %w", tmp, podNS, err)
			}
			break
		}
	}
	link, err := b.findVFOnNode(vf)
	if err != nil {
		return err
	}
	if link == nil {
		b.log.Warn("VF not found in the pod or on the node; nothing to give back", "vf", vf.String())
		return nil
	}
	return b.restoreVF(link, vf)
}

func (b *Backend) moveToHost(podNS *netNS, link netlink.Link) error {
	if b.host.ns == nil {
		return podNS.nl.LinkSetNsPid(link, os.Getpid())
	}
	return podNS.nl.LinkSetNsFd(link, int(b.host.ns.Fd()))
}

// findVFOnNode finds the VF's netdev in the node's namespace: by PCI
// address through sysfs (which names it whatever it is called), or under
// its recorded or temporary name. nil when it is not there.
func (b *Backend) findVFOnNode(vf platform.VF) (netlink.Link, error) {
	names := []string{vf.HostName, vfTempName(vf.PCIAddress)}
	if vfi, err := b.sriov.lookupVF(vf.PCIAddress); err == nil && vfi.Netdev != "" {
		names = append([]string{vfi.Netdev}, names...)
	}
	for _, name := range names {
		link, err := b.host.nl.LinkByName(name)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
		return link, nil
	}
	return nil, nil
}

// restoreVF gives the VF on the node its recorded name, MAC, MTU and state.
func (b *Backend) restoreVF(link netlink.Link, vf platform.VF) error {
	a := link.Attrs()
	if a.Name != vf.HostName {
		if err := b.host.nl.LinkSetDown(link); err != nil {
			return fmt.Errorf("set %s down: %w", a.Name, err)
		}
		if err := b.host.nl.LinkSetName(link, vf.HostName); err != nil {
			return fmt.Errorf("rename %s to %s: %w", a.Name, vf.HostName, err)
		}
	}
	if vf.HostMAC != nil && !bytes.Equal(a.HardwareAddr, vf.HostMAC) {
		if err := b.host.nl.LinkSetHardwareAddr(link, vf.HostMAC); err != nil {
			return fmt.Errorf("restore %s MAC %s: %w", vf.HostName, vf.HostMAC, err)
		}
	}
	if vf.HostMTU != 0 && a.MTU != vf.HostMTU {
		if err := b.host.nl.LinkSetMTU(link, vf.HostMTU); err != nil {
			return fmt.Errorf("restore %s MTU %d: %w", vf.HostName, vf.HostMTU, err)
		}
	}
	if a.Alias != vf.HostAlias {
		if err := b.host.nl.LinkSetAlias(link, vf.HostAlias); err != nil {
			return fmt.Errorf("restore %s alias: %w", vf.HostName, err)
		}
	}
	set := b.host.nl.LinkSetDown
	if vf.HostUp {
		set = b.host.nl.LinkSetUp
	}
	if err := set(link); err != nil {
		return fmt.Errorf("restore %s state: %w", vf.HostName, err)
	}
	b.log.Info("VF back on the node", "vf", vf.String(), "name", vf.HostName)
	return nil
}

// CheckVF implements platform.VFPodAttacher.
func (b *Backend) CheckVF(_ context.Context, pod platform.PodNetwork, vf platform.VF) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	what := fmt.Sprintf("check pod %s on %s", pod.PodRef, vf)
	podNS, err := openPodNetNS(pod.NetNS)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer podNS.Close()
	var errs []error
	diff := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	rep, err := b.host.nl.LinkByName(vf.Representor)
	if err != nil {
		diff("representor %s: %v", vf.Representor, err)
	} else {
		checkOVSPort(rep, pod.MTU, diff)
	}
	podLink, err := podNS.nl.LinkByName(pod.IfName)
	if err != nil {
		diff("interface %s in %s: %v", pod.IfName, podNS, err)
	} else if err := checkPodLink(pod, podNS, podLink, b.datapath, diff); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
