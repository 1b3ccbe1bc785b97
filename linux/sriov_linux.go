package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/k8snetworkplumbingwg/sriovnet"
	utilfs "github.com/k8snetworkplumbingwg/sriovnet/pkg/utils/filesystem"
	"github.com/k8snetworkplumbingwg/sriovnet/pkg/utils/netlinkops"
	"github.com/vishvananda/netlink"

	"github.com/seine-cni/seine/platform"
)

// SR-IOV discovery: which PFs are in switchdev mode, and for a VF's PCI
// address its PF, index, netdev and representor. sysfs is read through
// sriovnet (github.com/k8snetworkplumbingwg/sriovnet), whose filesystem is
// replaceable: production reads /sys, tests and the lab a tree of their own
// (platform.Config.SysfsRoot). The eswitch mode comes from devlink.

// sriovnetMu guards sriovnet's package-level filesystem and netlink
// operations, which sriovHost swaps in for the duration of each call.
var sriovnetMu sync.Mutex

// devlinkReader answers what only devlink knows: the mode of a PCI
// device's embedded switch ("switchdev", "legacy").
type devlinkReader interface {
	EswitchMode(pciAddress string) (string, error)
}

// netlinkDevlink reads devlink through a netlink handle.
type netlinkDevlink struct{ nl *netlink.Handle }

func (d netlinkDevlink) EswitchMode(pci string) (string, error) {
	dev, err := d.nl.DevLinkGetDeviceByName("pci", pci)
	if err != nil {
		return "", fmt.Errorf("devlink pci/%s: %w", pci, err)
	}
	return dev.Attrs.Eswitch.Mode, nil
}

// sriovHost is the node's SR-IOV hardware as sysfs and devlink show it.
type sriovHost struct {
	fs      utilfs.Filesystem
	devlink devlinkReader
	// nlops, when set, replaces the netlink (devlink port) calls sriovnet
	// makes to find a representor; tests set it.
	nlops netlinkops.NetlinkOps
}

// newSriovHost reads sysfs at root ("" for /sys) and devlink through nl.
func newSriovHost(root string, nl *netlink.Handle) *sriovHost {
	var fs utilfs.Filesystem = utilfs.DefaultFs{}
	if root != "" {
		fs = rootedFS{root: root}
	}
	return &sriovHost{fs: fs, devlink: netlinkDevlink{nl: nl}}
}

// with runs f with sriovnet reading h's filesystem.
func (h *sriovHost) with(f func() error) error {
	sriovnetMu.Lock()
	defer sriovnetMu.Unlock()
	old := utilfs.Fs
	utilfs.Fs = h.fs
	defer func() { utilfs.Fs = old }()
	if h.nlops != nil {
		netlinkops.SetNetlinkOps(h.nlops)
		defer netlinkops.ResetNetlinkOps()
	}
	return f()
}

// vfInfo is a VF as discovery finds it on the node.
type vfInfo struct {
	PCI, PFPCI  string
	PF          string // the PF's netdev (uplink representor)
	Index       int
	Netdev      string // "" when the VF has no netdev in the node's namespace
	Representor string
}

var virtfnRE = regexp.MustCompile(`^virtfn(\d+)$`)

// lookupVF finds a VF by PCI address. Its errors wrap
// platform.ErrVFUnavailable and say what is missing: not a VF, PF not in
// switchdev mode, VF index beyond sriov_numvfs, no representor. A VF
// without a netdev on the node is not an error here (Netdev is "").
func (h *sriovHost) lookupVF(pci string) (vfInfo, error) {
	if err := platform.ValidPCIAddress(pci); err != nil {
		return vfInfo{}, fmt.Errorf("%w: %w", platform.ErrVFUnavailable, err)
	}
	vf := vfInfo{PCI: pci, Index: -1}
	err := h.with(func() error {
		if _, err := h.fs.Stat(filepath.Join(sriovnet.PciSysDir, pci)); err != nil {
			return fmt.Errorf("no PCI device %s on this node", pci)
		}
		pf, err := sriovnet.GetPfPciFromVfPci(pci)
		if err != nil {
			return fmt.Errorf("PCI device %s is not an SR-IOV VF (no physfn link)", pci)
		}
		vf.PFPCI = pf
		if vf.Index, err = h.vfIndex(pf, pci); err != nil {
			return err
		}
		numVFs, err := h.readInt(filepath.Join(sriovnet.PciSysDir, pf, "sriov_numvfs"))
		if err != nil {
			return fmt.Errorf("PF %s: %w", pf, err)
		}
		if vf.Index >= numVFs {
			return fmt.Errorf("VF %s is VF %d of PF %s, which has only %d VFs enabled (sriov_numvfs)", pci, vf.Index, pf, numVFs)
		}
		if mode, err := h.devlink.EswitchMode(pf); err == nil && mode != "switchdev" {
			return fmt.Errorf("PF %s is in eswitch mode %q, not switchdev (devlink dev eswitch set pci/%s mode switchdev)", pf, mode, pf)
		}
		uplink, err := sriovnet.GetUplinkRepresentor(pci)
		if err != nil {
			return fmt.Errorf("PF %s of VF %s is not in switchdev mode (no netdev with phys_switch_id): %w", pf, pci, err)
		}
		vf.PF = uplink
		if vf.Representor, err = sriovnet.GetVfRepresentor(uplink, vf.Index); err != nil {
			return fmt.Errorf("VF %d of %s has no representor: %w", vf.Index, uplink, err)
		}
		// The netdev directory lists the VF's netdev only while it is in
		// the namespace sysfs was mounted in (the node's).
		if devs, err := sriovnet.GetNetDevicesFromPci(pci); err == nil && len(devs) > 0 {
			slices.Sort(devs)
			vf.Netdev = devs[0]
		}
		return nil
	})
	if err != nil {
		return vfInfo{}, fmt.Errorf("%w: %w", platform.ErrVFUnavailable, err)
	}
	return vf, nil
}

// vfIndex finds the virtfnN link of pf that points at vf. sriovnet's
// GetVfIndexByPciAddress reads the real filesystem whatever Fs says, so
// this reads the links itself.
func (h *sriovHost) vfIndex(pf, vf string) (int, error) {
	dir := filepath.Join(sriovnet.PciSysDir, pf)
	entries, err := h.fs.ReadDir(dir)
	if err != nil {
		return -1, fmt.Errorf("PF %s: %w", pf, err)
	}
	for _, e := range entries {
		m := virtfnRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		target, err := h.fs.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || filepath.Base(target) != vf {
			continue
		}
		return strconv.Atoi(m[1])
	}
	return -1, fmt.Errorf("PF %s lists no virtfn link to VF %s", pf, vf)
}

func (h *sriovHost) readInt(path string) (int, error) {
	b, err := h.fs.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// discover lists the PCI devices with SR-IOV enabled (sriov_totalvfs > 0)
// and the eswitch mode of each: devlink's answer, or without one
// "switchdev" when the PF's netdev has a phys_switch_id (what switchdev
// drivers expose) and "" otherwise.
func (h *sriovHost) discover() ([]platform.SwitchdevPF, error) {
	var pfs []platform.SwitchdevPF
	err := h.with(func() error {
		devs, err := h.fs.ReadDir(sriovnet.PciSysDir)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, d := range devs {
			pci := d.Name()
			dir := filepath.Join(sriovnet.PciSysDir, pci)
			total, err := h.readInt(filepath.Join(dir, "sriov_totalvfs"))
			if err != nil || total == 0 {
				continue
			}
			pf := platform.SwitchdevPF{PCIAddress: pci, TotalVFs: total}
			pf.NumVFs, _ = h.readInt(filepath.Join(dir, "sriov_numvfs"))
			if names, err := sriovnet.GetNetDevicesFromPci(pci); err == nil && len(names) > 0 {
				slices.Sort(names)
				pf.Name = names[0]
			}
			mode, derr := h.devlink.EswitchMode(pci)
			switch {
			case derr == nil:
				pf.EswitchMode = mode
			case pf.Name != "":
				if id, err := h.fs.ReadFile(filepath.Join(sriovnet.NetSysDir, pf.Name, "phys_switch_id")); err == nil && len(strings.TrimSpace(string(id))) > 0 {
					pf.EswitchMode = "switchdev"
				}
			}
			if pf.Name == "" {
				pf.Error = "no netdev on this node"
			} else if pf.EswitchMode != "switchdev" {
				pf.Error = fmt.Sprintf("eswitch mode %q, not switchdev", pf.EswitchMode)
			}
			pfs = append(pfs, pf)
		}
		return nil
	})
	return pfs, err
}

// DiscoverSRIOV implements platform.SRIOVDiscoverer.
func (b *Backend) DiscoverSRIOV(ctx context.Context) ([]platform.SwitchdevPF, error) {
	if err := ctxErr(ctx, "discover SR-IOV"); err != nil {
		return nil, err
	}
	pfs, err := b.sriov.discover()
	if err != nil {
		return nil, fmt.Errorf("discover SR-IOV: %w", err)
	}
	return pfs, nil
}

// rootedFS is sriovnet's Filesystem over a directory standing for /sys:
// "/sys/x" is root/x. Symbolic links in the tree should be relative (as
// sysfs's are) so that following them stays inside it.
type rootedFS struct{ root string }

func (r rootedFS) path(name string) string {
	rel, ok := strings.CutPrefix(filepath.Clean(name), "/sys")
	if !ok {
		return filepath.Join(r.root, "outside-sys", name) // never exists
	}
	return filepath.Join(r.root, rel)
}

func (r rootedFS) Stat(name string) (os.FileInfo, error) { return os.Stat(r.path(name)) }
func (r rootedFS) Create(name string) (utilfs.File, error) {
	return utilfs.DefaultFs{}.Create(r.path(name))
}
func (r rootedFS) Rename(o, n string) error { return os.Rename(r.path(o), r.path(n)) }
func (r rootedFS) MkdirAll(p string, m os.FileMode) error {
	return os.MkdirAll(r.path(p), m)
}
func (r rootedFS) Chtimes(name string, a, m time.Time) error {
	return os.Chtimes(r.path(name), a, m)
}
func (r rootedFS) RemoveAll(p string) error             { return os.RemoveAll(r.path(p)) }
func (r rootedFS) Remove(name string) error             { return os.Remove(r.path(name)) }
func (r rootedFS) Readlink(name string) (string, error) { return os.Readlink(r.path(name)) }
func (r rootedFS) Symlink(o, n string) error            { return os.Symlink(o, r.path(n)) }
func (r rootedFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(r.path(name)) }
func (r rootedFS) WriteFile(name string, data []byte, perm os.FileMode) error {
	return os.WriteFile(r.path(name), data, perm)
}
func (r rootedFS) TempDir(dir, prefix string) (string, error) {
	return os.MkdirTemp(r.path(dir), prefix)
}
func (r rootedFS) TempFile(dir, prefix string) (utilfs.File, error) {
	return utilfs.DefaultFs{}.TempFile(r.path(dir), prefix)
}
func (r rootedFS) ReadDir(dir string) ([]os.FileInfo, error) {
	return utilfs.DefaultFs{}.ReadDir(r.path(dir))
}
func (r rootedFS) Walk(root string, fn filepath.WalkFunc) error {
	return filepath.Walk(r.path(root), fn)
}
