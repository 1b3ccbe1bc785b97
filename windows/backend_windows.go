// Package windows is Seine's Windows backend of the platform contract: a
// Transparent HNS network on the uplink with the Open vSwitch Hyper-V
// extension enabled on its vSwitch, the uplink and the node's addresses on
// the OVS bridge (the bridged-uplink topology), one HNS endpoint per pod
// attached to the pod's HNS namespace, routes and permanent neighbours
// through the IP Helper API, SNAT with WinNAT, and the Windows part of a
// support bundle. Every file is *_windows.go; services pick the backend in
// main_windows.go. See README.md for the design and what is tested how.
package windows

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// Names and markers the backend uses on the host.
const (
	// NetworkName is the HNS network Seine creates on the uplink.
	NetworkName = "seine"
	// OVSExtensionID is the Hyper-V switch extension ID of Open vSwitch.
	OVSExtensionID = "583CC151-73EC-4A6A-8B47-578297AD7623"
	// RouteMetric marks the routes Seine installs (the route's own metric,
	// added to the interface metric by Windows); HostRules.Sync owns every
	// route carrying it and no other.
	RouteMetric = 83
	// NATPrefix starts the name of every WinNAT instance Seine creates.
	NATPrefix = "seine-"
	// EndpointPrefix starts the name of every HNS endpoint Seine creates.
	EndpointPrefix = "seine_"
)

// DefaultOVSRunDir is OVS for Windows' run directory, where ovs-vswitchd
// serves its unixctl socket as a named pipe, unless Config.OVSRunDir says
// otherwise.
const DefaultOVSRunDir = `C:\openvswitch\var\run\openvswitch`

// External IDs Setup puts on the node's OVS ports, as on Linux.
const (
	ExternalIDType = "seine-type"
	TypeGateway    = "gateway"
	TypeUplink     = "uplink"
)

// Backend implements platform.Backend on Windows. Setup and Sync are
// serialised; pod operations on different attachments may run in parallel
// (the core serialises operations on one attachment).
type Backend struct {
	log    *slog.Logger
	ovs    platform.OVSDB
	rundir string

	hns    hnsAPI
	vswt   vswitchAPI
	stack  ipStack
	nat    natAPI
	appctl func(ctx context.Context, rundir string) (*appctl.Client, error)

	mu sync.Mutex // serialises Setup and Sync
	// node is what the last Setup found, for Attach (network, MTU) and Sync.
	node struct {
		sync.Mutex
		networkID string
		uplinkMTU int
	}
}

var _ platform.Backend = (*Backend)(nil)

// seams are the OS interfaces a Backend uses; tests pass fakes.
type seams struct {
	hns    hnsAPI
	vswt   vswitchAPI
	stack  ipStack
	nat    natAPI
	appctl func(ctx context.Context, rundir string) (*appctl.Client, error)
}

// New returns the backend on the real OS interfaces: HNS through hcn, the
// vSwitch extension through HNS, the IP Helper API, WinNAT, and
// ovs-vswitchd's unixctl named pipe for diagnostics. Nothing is called
// until Setup; a host without HNS fails there with an error wrapping
// platform.ErrNotSupported.
func New(cfg platform.Config) (*Backend, error) {
	return newBackend(cfg, seams{
		hns: hcnAPI{}, vswt: hnsV1VSwitch{}, stack: iphlpapi{}, nat: newWinNAT(),
		appctl: func(ctx context.Context, rundir string) (*appctl.Client, error) {
			return appctl.DialPipeTarget(ctx, rundir, "ovs-vswitchd")
		},
	})
}

func newBackend(cfg platform.Config, s seams) (*Backend, error) {
	if cfg.HostNetNS != "" {
		return nil, fmt.Errorf("windows backend: host network namespace %q: %w", cfg.HostNetNS,
			platform.NotSupported("network namespaces"))
	}
	if cfg.SysfsRoot != "" {
		return nil, fmt.Errorf("windows backend: sysfs root %q: %w", cfg.SysfsRoot,
			platform.NotSupported("SR-IOV switchdev (sysfs)"))
	}
	switch cfg.Datapath {
	case "", ovsdb.DatapathSystem:
	default:
		return nil, fmt.Errorf("windows backend: datapath %q: %w", cfg.Datapath,
			platform.NotSupported("datapaths other than the Hyper-V extension (system)"))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{
		log: log, ovs: cfg.OVSDB, rundir: cmp.Or(cfg.OVSRunDir, DefaultOVSRunDir),
		hns: s.hns, vswt: s.vswt, stack: s.stack, nat: s.nat, appctl: s.appctl,
	}, nil
}

// Close releases nothing: the backend holds no handles between calls. It
// does not undo Setup.
func (b *Backend) Close() error { return nil }

// ctxErr returns ctx's error wrapped with what was about to be done.
func ctxErr(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
