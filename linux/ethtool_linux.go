package linux

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value from <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data set: the interface name, then a
// pointer in the union, padded to the union's size (24 bytes on 64-bit).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool issues one SIOCETHTOOL get/set of an ethtool_value on ifname, from
// the calling thread's network namespace.
func ethtool(ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket for ethtool: %w", err)
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// setTxChecksum turns transmit checksum offload of ifname on or off (what
// `ethtool -K ifname tx on|off` does), in the calling thread's namespace.
//
// Why: a veth hands CHECKSUM_PARTIAL packets to an AF_PACKET socket, so the
// userspace (netdev) datapath reads TCP segments whose checksum is not filled
// in, and userspace conntrack marks them +inv. With offload off, the pod's
// kernel computes checksums before the packet leaves.
func setTxChecksum(ifname string, on bool) error {
	var want uint32
	if on {
		want = 1
	}
	if _, err := ethtool(ifname, unix.ETHTOOL_STXCSUM, want); err != nil {
		return fmt.Errorf("ethtool %s tx %s: %w", ifname, onOff(on), err)
	}
	return nil
}

// txChecksum reports whether transmit checksum offload of ifname is on.
func txChecksum(ifname string) (bool, error) {
	v, err := ethtool(ifname, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("ethtool %s get tx: %w", ifname, err)
	}
	return v != 0, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
