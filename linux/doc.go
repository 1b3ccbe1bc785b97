// Package linux is Seine's Linux backend of the platform contract: pod veths
// with netlink, node setup for the routed-host and bridged-uplink topologies,
// routes with netlink and SNAT with one iptables-restore transaction per IP
// family, and diagnostics. Every other file is *_linux.go, so on other
// operating systems the package is empty; services pick it in main_linux.go.
// See README.md for what each part does and the hazards (network namespaces
// and OS threads, the netdev datapath).
package linux
