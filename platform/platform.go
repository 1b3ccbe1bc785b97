// Package platform is the contract between Seine's platform-neutral core and a
// host operating system. A backend (linux/, windows/) implements a few small
// interfaces; the core hands each of them whole desired state and the backend
// makes the host match it, idempotently: calling again with the same state
// changes nothing, and removing what is absent is not an error.
//
// The package holds interfaces, plain desired-state values (netip.Prefix,
// net.HardwareAddr, strings) and ErrNotSupported. It imports no OS package;
// it imports ovs/ovsdb only for the types of the OVSDB interface a backend
// receives. See README.md for who owns what.
package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"

	"github.com/seine-cni/seine/ovs/ovsdb"
)

// ErrNotSupported is wrapped by errors for a capability or an option the
// running OS (or this backend) does not have. It also matches
// errors.ErrUnsupported. Tests skip on it; callers fall back or report it.
var ErrNotSupported = fmt.Errorf("not supported on this platform: %w", errors.ErrUnsupported)

// NotSupported returns an error naming what is missing that wraps ErrNotSupported.
func NotSupported(what string) error {
	return fmt.Errorf("%s: %w", what, ErrNotSupported)
}

// NodeNetwork prepares the node's host side: the OVS bridge and the ports the
// topology needs, the gateway, the uplink, addresses, MTU and sysctls. Setup
// is called once at agent start and again whenever the node's configuration
// changes; each call takes the whole configuration.
type NodeNetwork interface {
	Setup(ctx context.Context, cfg NodeConfig) (NodeState, error)
}

// PodAttacher creates and removes the host-side interface of a pod.
//
// Attach creates the interface (or finds it already right, for a retried ADD)
// and returns the port to plug into OVS; plugging it is the core's business.
// A failed Attach leaves nothing behind; when the pod's network namespace
// does not exist its error wraps ErrNoNetNS. Detach removes what Attach made
// and succeeds when it is already gone, also when the pod's network
// namespace (or compartment) no longer exists. Check reports, without
// changing anything, how the host differs from pod (also a namespace that is
// gone).
type PodAttacher interface {
	Attach(ctx context.Context, pod PodNetwork) (PodInterface, error)
	Detach(ctx context.Context, ref PodRef) error
	Check(ctx context.Context, pod PodNetwork) error
}

// HostRules makes the host's routes and NAT rules match HostState: routes to
// peer pod CIDRs, the service routes, SNAT of pod traffic leaving the cluster.
// Every call takes the whole state; what Seine installed earlier and is no
// longer in it is removed. Rules are applied in one transaction per kind
// (one iptables-restore per IP family on Linux).
//
// Sync compares with the host as it is, not with what it installed last:
// the core calls it again with the same state periodically (and on a
// HostRulesWatcher's notification), so a rule or route someone else removed
// comes back. A Sync that finds the host right should change nothing and
// cost little (reads only).
type HostRules interface {
	Sync(ctx context.Context, state HostState) error
}

// HostRulesWatcher is a capability: WatchHostRules calls changed whenever the
// host changes in a way that may undo what HostRules.Sync installed (Linux:
// one of Seine's routes deleted, the gateway interface recreated or brought
// up; Windows: the route table changed), until ctx ends; it then returns nil.
// changed must not block: the core only notes that a resync is due. It is an
// optimisation: not everything Sync installs can be watched (iptables and
// WinNAT have no notifications), so the core also re-syncs periodically. An
// error means there are no notifications (any more); find the capability by
// type assertion.
type HostRulesWatcher interface {
	WatchHostRules(ctx context.Context, changed func()) error
}

// Diagnostics writes the OS part of a support bundle: interfaces, addresses,
// routes, NAT rules, OVS datapath state. It writes as much as it can and
// returns the errors of the parts it could not collect.
type Diagnostics interface {
	Collect(ctx context.Context, w io.Writer) error
}

// Config is what every backend's constructor takes: New(Config) (*Backend,
// error) has the same signature on every OS, and
// services/<binary>/main_<os>.go is the only place that calls one.
type Config struct {
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
	// OVSDB is the core's database client; Setup builds the bridge and the
	// node's ports through it. Backends that only attach pods may get nil.
	OVSDB OVSDB
	// Datapath is the bridge's OVS datapath. With ovsdb.DatapathNetdev
	// (userspace) the Linux backend also turns off tx checksum offload on pod
	// interfaces, which userspace conntrack would otherwise see as invalid.
	Datapath ovsdb.DatapathType
	// OVSRunDir is where ovs-vswitchd's control socket lives, for
	// Diagnostics ("" means the OS's default).
	OVSRunDir string
	// HostNetNS is where the node's network lives. On Linux it is the path of
	// a network namespace, "" (production) meaning the process's own; the lab
	// and tests point it at a node's namespace. Other OSes refuse a non-empty
	// value with ErrNotSupported.
	HostNetNS string
	// SysfsRoot is the directory the Linux backend reads as /sys for SR-IOV
	// discovery ("" means /sys itself); tests and the lab point it at a
	// tree of their own that describes VFs. Other OSes refuse a non-empty
	// value with ErrNotSupported.
	SysfsRoot string
}

// Backend is everything one OS provides.
type Backend interface {
	NodeNetwork
	PodAttacher
	HostRules
	Diagnostics
	// Close releases what the backend holds open (netlink sockets, handles).
	// It does not undo Setup.
	Close() error
}

// NodeTeardown is a capability: undo what Setup did (give the uplink back its
// addresses and routes, remove the ports Setup added) for `seine-agent
// uninstall`. Find it by type assertion; a backend without it cannot undo.
type NodeTeardown interface {
	Teardown(ctx context.Context, cfg NodeConfig) error
}

// HostRulesRemover is a capability: remove everything HostRules.Sync and
// NodePortRedirector.SyncNodePorts installed on the host (on Linux Seine's
// iptables chains and the jumps to them, and the routes Seine marks as its
// own), for node cleanup (`seinectl node-cleanup`) once the agent is gone.
// Removing what is absent is not an error. Find it by type assertion.
type HostRulesRemover interface {
	RemoveHostRules(ctx context.Context) error
}

// NextHopResolver is a capability: the link-layer address of the next hop
// the host uses towards ip (ip itself on a connected subnet, else the
// gateway of the route to it), from the host's own neighbour table. fresh
// is false when the host has not confirmed the address lately (Linux's
// STALE, DELAY, PROBE): it may be out of date until the host sends
// something there. Without a usable entry the error wraps ErrNoNeighbour.
// IPv4 only; an IPv6 address is an error.
//
// In the bridged-uplink topology the core uses it to send noEncap pod
// traffic to a peer node straight out of the uplink. Find it by type
// assertion; without it a noEncap peer's traffic is routed by the host
// (which works, only slower). The resolver never sends anything itself:
// making the host resolve an address is the caller's business.
type NextHopResolver interface {
	NextHopMAC(ctx context.Context, ip netip.Addr) (mac net.HardwareAddr, fresh bool, err error)
}

// ErrNoNeighbour is wrapped by NextHopResolver.NextHopMAC when the host has
// not resolved the next hop's link-layer address (yet): the caller makes the
// host send something there and asks again.
var ErrNoNeighbour = errors.New("next hop not resolved")

// OVSDB is the part of the Open_vSwitch database client a backend uses to
// build the bridge and its node ports during Setup. *ovsdb.Client satisfies
// it; platformtest.FakeOVSDB records what it is asked.
//
// The core owns the OVSDB connection and hands it to the backend rather than
// creating the bridge itself, because the order of host and OVS steps is the
// OS's business: on Windows the HNS network (and with it the Hyper-V switch
// with the OVS extension) must exist before the bridge can take the uplink; on
// Linux in the bridged-uplink topology the uplink joins the bridge first and
// the node's address moves to the bridge's internal port afterwards.
// Pod ports are plugged by the core, not the backend.
type OVSDB interface {
	EnsureBridge(ctx context.Context, cfg ovsdb.BridgeConfig) error
	EnsurePort(ctx context.Context, bridge string, p ovsdb.PortConfig) error
	DeletePort(ctx context.Context, name string) error
	GetPort(ctx context.Context, name string) (ovsdb.PortInfo, error)
	// PortOfport waits until ovs-vswitchd has given the port an OpenFlow port
	// number (*ovsdb.InterfaceError when it could not add it).
	PortOfport(ctx context.Context, name string) (int, error)
}
