// Package sriovfs writes the sysfs of SR-IOV NICs in switchdev mode into a
// directory standing for /sys (platform.Config.SysfsRoot), for tests of
// SR-IOV discovery and of VF pods whose VFs are emulated by veth pairs.
package sriovfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// PF describes one SR-IOV NIC port for Write: the sysfs a
// switchdev driver (mlx5) shows, with relative links as sysfs has them.
type PF struct {
	PCI, Name string
	// SwitchID is phys_switch_id ("" leaves it out: legacy mode).
	SwitchID         string
	NumVFs, TotalVFs int
	VFs              []VF
}

// VF is one VF: Netdev "" means no netdev in the node's view (moved
// into a pod, or bound to vfio-pci); Rep "" means no representor.
type VF struct{ PCI, Netdev, Rep string }

// Write writes the PFs' sysfs under root (standing for /sys).
func Write(t testing.TB, root string, pfs ...PF) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	devs := filepath.Join(root, "bus/pci/devices")
	class := filepath.Join(root, "class/net")
	write := func(path, content string) {
		must(os.MkdirAll(filepath.Dir(path), 0o755))
		must(os.WriteFile(path, []byte(content+"\n"), 0o644))
	}
	netdev := func(name, pci, switchID, portName string) {
		must(os.MkdirAll(filepath.Join(devs, pci, "net", name), 0o755))
		dir := filepath.Join(class, name)
		must(os.MkdirAll(dir, 0o755))
		must(os.Symlink("../../../bus/pci/devices/"+pci, filepath.Join(dir, "device")))
		if switchID != "" {
			write(filepath.Join(dir, "phys_switch_id"), switchID)
		}
		if portName != "" {
			write(filepath.Join(dir, "phys_port_name"), portName)
		}
	}
	for _, pf := range pfs {
		must(os.MkdirAll(filepath.Join(devs, pf.PCI), 0o755))
		write(filepath.Join(devs, pf.PCI, "sriov_totalvfs"), fmt.Sprint(pf.TotalVFs))
		write(filepath.Join(devs, pf.PCI, "sriov_numvfs"), fmt.Sprint(pf.NumVFs))
		netdev(pf.Name, pf.PCI, pf.SwitchID, "p0")
		for i, vf := range pf.VFs {
			must(os.MkdirAll(filepath.Join(devs, vf.PCI), 0o755))
			must(os.Symlink("../"+vf.PCI, filepath.Join(devs, pf.PCI, fmt.Sprintf("virtfn%d", i))))
			must(os.Symlink("../"+pf.PCI, filepath.Join(devs, vf.PCI, "physfn")))
			if vf.Netdev != "" {
				netdev(vf.Netdev, vf.PCI, "", "")
			}
			if vf.Rep != "" {
				netdev(vf.Rep, pf.PCI, pf.SwitchID, fmt.Sprintf("pf0vf%d", i))
			}
		}
	}
}
