package linux

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// DefaultOVSRunDir is where ovs-vswitchd's control socket lives on a Linux
// node unless Config.OVSRunDir says otherwise.
const DefaultOVSRunDir = "/var/run/openvswitch"

// Backend implements platform.Backend and platform.NodeTeardown on Linux.
// Its methods are safe for concurrent use; Setup, Teardown and Sync are
// serialised, pod operations on different attachments run in parallel (the
// core serialises operations on one attachment).
type Backend struct {
	log      *slog.Logger
	ovs      platform.OVSDB
	datapath ovsdb.DatapathType
	rundir   string
	host     *netNS // the node's network namespace
	sriov    *sriovHost

	mu sync.Mutex // serialises Setup, Teardown and Sync
	// vfMu serialises the moves of SR-IOV VFs (AttachVF, DetachVF): the
	// rollback of a failed attach looks for its VF on the node by name,
	// which must not find one another attach is moving.
	vfMu sync.Mutex
	// syncedGateway is the gateway of the last synced state, whose changes
	// WatchHostRules reports.
	syncedGateway atomic.Pointer[string]
	// udpHostPorts are the UDP host ports of the last SyncNodePorts (mu).
	udpHostPorts map[platform.HostPort]bool
}

var (
	_ platform.Backend         = (*Backend)(nil)
	_ platform.NodeTeardown    = (*Backend)(nil)
	_ platform.VFPodAttacher   = (*Backend)(nil)
	_ platform.SRIOVDiscoverer = (*Backend)(nil)
)

// New opens the node's network namespace (cfg.HostNetNS, or the process's
// own) and returns the backend.
func New(cfg platform.Config) (*Backend, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch cfg.Datapath {
	case "", ovsdb.DatapathSystem, ovsdb.DatapathNetdev:
	default:
		return nil, fmt.Errorf("linux backend: datapath %q: want system or netdev", cfg.Datapath)
	}
	host, err := openNetNS(cfg.HostNetNS)
	if err != nil {
		return nil, fmt.Errorf("linux backend: %w", err)
	}
	return &Backend{
		log:      log,
		ovs:      cfg.OVSDB,
		datapath: cmp.Or(cfg.Datapath, ovsdb.DatapathSystem),
		rundir:   cmp.Or(cfg.OVSRunDir, DefaultOVSRunDir),
		host:     host,
		sriov:    newSriovHost(cfg.SysfsRoot, host.nl),
	}, nil
}

// Close releases the netlink sockets and the namespace handle. It does not
// undo Setup (see Teardown).
func (b *Backend) Close() error {
	return b.host.Close()
}

// ctxErr returns ctx's error wrapped with what was about to be done.
func ctxErr(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ignoreNotFound drops the errors netlink gives for a link, address, route or
// neighbour that is already gone.
func ignoreNotFound(err error) error {
	if isNotFound(err) {
		return nil
	}
	return err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)
}
