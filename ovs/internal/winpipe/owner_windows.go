package winpipe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

var procGetExtendedTcpTable = windows.NewLazySystemDLL("iphlpapi.dll").NewProc("GetExtendedTcpTable")

// tcpTableOwnerPIDConnections is TCP_TABLE_OWNER_PID_CONNECTIONS: the
// connections (not the listeners) with their owning process IDs;
// mibTCPStateEstab is MIB_TCP_STATE_ESTAB.
const (
	tcpTableOwnerPIDConnections = 4
	mibTCPStateEstab            = 5
)

var errNotListed = errors.New("no established connection in the TCP table")

// mibTCPRowOwnerPID is MIB_TCPROW_OWNER_PID: addresses in network byte
// order, ports in network byte order in the low 16 bits.
type mibTCPRowOwnerPID struct {
	State, LocalAddr, LocalPort, RemoteAddr, RemotePort, OwningPID uint32
}

// OwnProcess admits the loopback connections this process made (AdmitFunc).
// A row not listed yet, or listed with owner 0 (the idle process, which
// owns no connection: the owner is not known yet; measured under Wine in
// about one run in four), is looked up again for up to ~0.5 s; an owner
// still unknown then is refused.
func OwnProcess(c net.Conn) error {
	pid, err := PeerPID(c)
	for try := 0; (errors.Is(err, errNotListed) || err == nil && pid == 0) && try < 25; try++ {
		time.Sleep(20 * time.Millisecond) // a table that lags the accept
		pid, err = PeerPID(c)
	}
	if err != nil {
		return err
	}
	if pid != uint32(os.Getpid()) {
		return fmt.Errorf("connection from process %d, not from this one (%d)", pid, os.Getpid())
	}
	return nil
}

// PeerPID returns the process owning the other end of c, an IPv4 loopback
// TCP connection this process accepted, from the TCP table
// (GetExtendedTcpTable): the row whose local end is c's remote one and
// whose remote end is c's local one.
func PeerPID(c net.Conn) (uint32, error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("peer of %s: not a TCP connection", c.RemoteAddr())
	}
	l, r := local.AddrPort(), remote.AddrPort()
	if !l.Addr().Unmap().Is4() || !r.Addr().Unmap().Is4() {
		return 0, fmt.Errorf("peer of %s: IPv4 only", r)
	}
	if err := procGetExtendedTcpTable.Find(); err != nil {
		return 0, fmt.Errorf("GetExtendedTcpTable: %w", err)
	}
	size := uint32(16 << 10)
	for range 5 {
		buf := make([]byte, size)
		ret, _, _ := procGetExtendedTcpTable.Call(uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0,
			windows.AF_INET, tcpTableOwnerPIDConnections, 0)
		switch windows.Errno(ret) {
		case 0:
			n := binary.LittleEndian.Uint32(buf)
			rows := unsafe.Slice((*mibTCPRowOwnerPID)(unsafe.Pointer(&buf[4])), n)
			// A closed connection on the same ports (TIME_WAIT) may
			// still be listed: only an established one is this one.
			for _, row := range rows {
				if row.State == mibTCPStateEstab && endpoint(row.LocalAddr, row.LocalPort) == r && endpoint(row.RemoteAddr, row.RemotePort) == l {
					return row.OwningPID, nil
				}
			}
			return 0, fmt.Errorf("peer of %s: %w", r, errNotListed)
		case windows.ERROR_INSUFFICIENT_BUFFER:
			continue
		default:
			return 0, fmt.Errorf("GetExtendedTcpTable: %w", windows.Errno(ret))
		}
	}
	return 0, errors.New("GetExtendedTcpTable: the table kept growing")
}

func endpoint(addr, port uint32) netip.AddrPort {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], addr) // the bytes as they are in memory: network order
	p := uint16(port)
	return netip.AddrPortFrom(netip.AddrFrom4(a), p>>8|p<<8)
}
