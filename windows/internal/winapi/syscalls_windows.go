// Package winapi holds the IP Helper and HNS v1 functions that
// golang.org/x/sys/windows does not have, for Seine's Windows backend.
// zsyscall_windows.go is generated from the //sys lines below with
// mkwinsyscall: run `go run golang.org/x/sys/windows/mkwinsyscall -output
// zsyscall_windows.go syscalls_windows.go` here (the go:generate line does
// the same on a Windows machine); a trailing '?' makes a call return an error
// instead of panicking when the function is missing (Wine, a Windows
// without HNS).
package winapi

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

//go:generate go run golang.org/x/sys/windows/mkwinsyscall -output zsyscall_windows.go syscalls_windows.go

//sys	HNSCall(method *uint16, path *uint16, object *uint16, response **uint16) (hr error) = vmcompute.HNSCall?
//sys	InitializeIpForwardEntry(row *windows.MibIpForwardRow2) = iphlpapi.InitializeIpForwardEntry?
//sys	CreateIpForwardEntry2(row *windows.MibIpForwardRow2) (errcode error) = iphlpapi.CreateIpForwardEntry2?
//sys	DeleteIpForwardEntry2(row *windows.MibIpForwardRow2) (errcode error) = iphlpapi.DeleteIpForwardEntry2?
//sys	InitializeUnicastIpAddressEntry(row *windows.MibUnicastIpAddressRow) = iphlpapi.InitializeUnicastIpAddressEntry?
//sys	CreateUnicastIpAddressEntry(row *windows.MibUnicastIpAddressRow) (errcode error) = iphlpapi.CreateUnicastIpAddressEntry?
//sys	DeleteUnicastIpAddressEntry(row *windows.MibUnicastIpAddressRow) (errcode error) = iphlpapi.DeleteUnicastIpAddressEntry?
//sys	GetIpInterfaceEntry(row *windows.MibIpInterfaceRow) (errcode error) = iphlpapi.GetIpInterfaceEntry?
//sys	SetIpInterfaceEntry(row *windows.MibIpInterfaceRow) (errcode error) = iphlpapi.SetIpInterfaceEntry?
//sys	GetIpNetTable2(family uint16, table **MibIpNetTable2) (errcode error) = iphlpapi.GetIpNetTable2?
//sys	GetIpNetEntry2(row *MibIpNetRow2) (errcode error) = iphlpapi.GetIpNetEntry2?
//sys	CreateIpNetEntry2(row *MibIpNetRow2) (errcode error) = iphlpapi.CreateIpNetEntry2?
//sys	DeleteIpNetEntry2(row *MibIpNetRow2) (errcode error) = iphlpapi.DeleteIpNetEntry2?
//sys	NotifyRouteChange2(family uint16, callback uintptr, callerContext uintptr, initialNotification bool, handle *windows.Handle) (errcode error) = iphlpapi.NotifyRouteChange2?
//sys	CancelMibChangeNotify2(handle windows.Handle) (errcode error) = iphlpapi.CancelMibChangeNotify2?

// MIB_NOTIFICATION_TYPE (netioapi.h): why a change callback was called.
const (
	MibParameterNotification = 0 // a parameter of the entry changed
	MibAddInstance           = 1 // an entry was added
	MibDeleteInstance        = 2 // an entry was deleted
	MibInitialNotification   = 3 // the call registering the callback
)

// MibIpNetRow2 is MIB_IPNET_ROW2 (netioapi.h), 88 bytes on 64-bit Windows.
type MibIpNetRow2 struct {
	Address               windows.RawSockaddrInet6 // SOCKADDR_INET union
	InterfaceIndex        uint32
	InterfaceLuid         uint64
	PhysicalAddress       [32]byte
	PhysicalAddressLength uint32
	State                 uint32
	Flags                 uint8
	_                     [3]byte
	ReachabilityTime      uint32
}

// MibIpNetTable2 is MIB_IPNET_TABLE2.
type MibIpNetTable2 struct {
	NumEntries uint32
	Table      [1]MibIpNetRow2
}

// NL_NEIGHBOR_STATE (nldef.h): the state of a neighbour entry (MibIpNetRow2.State).
const (
	NlnsUnreachable = 0 // resolution failed
	NlnsIncomplete  = 1 // being resolved, no address yet
	NlnsProbe       = 2 // confirming an address again, by unicast
	NlnsDelay       = 3 // unconfirmed, waiting before probing
	NlnsStale       = 4 // an address not confirmed lately
	NlnsReachable   = 5 // an address confirmed lately
	NlnsPermanent   = 6 // a static entry
)

// Rows returns the entries of the table.
func (t *MibIpNetTable2) Rows() []MibIpNetRow2 {
	return unsafe.Slice(&t.Table[0], t.NumEntries)
}
