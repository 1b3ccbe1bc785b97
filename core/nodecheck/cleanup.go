package nodecheck

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/auditlog"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// CleanupOptions say how `seinectl node-cleanup` removes from this node
// what Seine made there, once seine-agent is gone and while Open vSwitch
// still runs.
type CleanupOptions struct {
	// ConfigPath is the configuration the agent ran with (the rendered one
	// of a DaemonSet install), a path on the node.
	ConfigPath string
	// HostRoot is where the node's root is mounted for this process (the
	// cleanup pod mounts it at /host); "" means this process's root. Every
	// path of the options and of the configuration is a node path under it,
	// the OVSDB endpoint's unix socket too.
	HostRoot string
	// CNIBinDir is the runtime's plugin directory on the node (holds
	// seine-cni as the "seine" plugin).
	CNIBinDir string
	// CNIConfDir is the runtime's configuration directory on the node;
	// empty means the configuration's cniConfDir.
	CNIConfDir string
	// Host is the OS seam (UnixHost if nil).
	Host Host
	// OpenBackend opens the OS backend for the node, with db as its OVSDB
	// client; it must implement platform.NodeTeardown and
	// platform.HostRulesRemover (a backend without them cannot clean up).
	OpenBackend func(cfg *agent.Config, db platform.OVSDB) (platform.Backend, error)
	// Timeout bounds connecting to OVSDB and each step; 0 means 30s.
	Timeout time.Duration
	// Logger receives the OVS client's and the backend's logs; nil discards them.
	Logger *slog.Logger
}

// cleanupOVSDB is the part of *ovsdb.Client the cleanup uses.
type cleanupOVSDB interface {
	platform.OVSDB
	ListPorts(ctx context.Context, match map[string]string) ([]ovsdb.PortInfo, error)
	DeleteBridge(ctx context.Context, name string) error
	Close()
}

// connectOVSDB is replaced by unit tests.
var connectOVSDB = func(ctx context.Context, endpoint string, log *slog.Logger) (cleanupOVSDB, error) {
	return ovsdb.Connect(ctx, ovsdb.Config{Endpoint: endpoint, Logger: log})
}

// Cleanup undoes on this node what seine-agent and node-prep did, in an
// order that keeps the node reachable: pods' interfaces, the node topology
// (platform.NodeTeardown: in the bridged-uplink topology the uplink gets the
// node's addresses and routes back before the bridge goes), the bridge with
// its ports, the host rules (platform.HostRulesRemover), then the files:
// the CNI configuration and plugin, the CNI socket, the state directory and
// the agent's configuration. It refuses to start while the agent still
// answers on its CNI socket (it would rebuild what is removed) and when
// Open vSwitch does not answer (the topology can only be undone through
// it); then nothing is changed. When a step on the network fails, the files
// are kept, so that running it again finds the configuration and finishes.
// Sysctls the agent set (ip_forward, ...) are left: other network software
// of the node relies on them too. Running it again on a clean node changes
// nothing.
func Cleanup(ctx context.Context, o CleanupOptions) *Report {
	host := o.Host
	if host == nil {
		host = UnixHost{}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cmp.Or(o.Timeout, 30*time.Second)
	r := &Report{}
	var rootErr error
	onNode := func(p string) string {
		q, err := inRoot(o.HostRoot, p)
		if err != nil {
			rootErr = err
			return filepath.Join(o.HostRoot, p)
		}
		return q
	}
	configPath := onNode(o.ConfigPath)
	if rootErr != nil {
		r.fail("agent config", configPath, fmt.Sprintf("%v: nothing was changed", rootErr))
		return r
	}
	cfg, err := agent.LoadConfig(configPath)
	if errors.Is(err, fs.ErrNotExist) {
		r.ok("agent config", configPath, "absent: nothing of the agent's to clean up (cleaned already, or never prepared)")
		return r
	}
	if err != nil {
		r.fail("agent config", configPath, fmt.Sprintf("%v: nothing was changed", err))
		return r
	}
	r.ok("agent config", configPath, describeConfig(cfg))
	socket := onNode(cfg.CNISocket)
	if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		c.Close()
		r.fail("agent stopped", socket, "seine-agent still answers on its CNI socket and would rebuild what is removed: stop it first (kubectl -n kube-system delete daemonset seine-agent); nothing was changed")
		return r
	}
	r.ok("agent stopped", socket, "nothing answers on the CNI socket")

	endpoint := cfg.OVS.DBEndpoint
	if path, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		endpoint = "unix:" + onNode(path)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	db, err := connectOVSDB(cctx, endpoint, log)
	cancel()
	if err != nil {
		r.fail("ovsdb", endpoint, fmt.Sprintf("%v: Open vSwitch must still run during the cleanup (remove seine-ovs afterwards); nothing was changed", err))
		return r
	}
	defer db.Close()
	r.ok("ovsdb", endpoint, "connected")
	backend, err := o.OpenBackend(cfg, db)
	if err != nil {
		r.fail("backend", "", fmt.Sprintf("%v: nothing was changed", err))
		return r
	}
	defer backend.Close()

	netOK := cleanNetwork(ctx, r, cfg, db, backend, timeout)
	if !netOK {
		r.fail("files", "", "kept (the agent configuration, state and CNI files) because a step above failed: fix it and run node-cleanup again")
		return r
	}
	cniConfDir := onNode(cmp.Or(o.CNIConfDir, cfg.CNIConfDir))
	if cniConfDir != "" {
		r.removed("cni config", removeFile(filepath.Join(cniConfDir, agent.CNIConfFile)))
	}
	if o.CNIBinDir != "" {
		r.removed("cni plugin", removeFile(filepath.Join(onNode(o.CNIBinDir), host.PluginFile(cni.PluginType))))
	}
	r.removed("cni socket", removeFile(socket))
	// DELs the plugin spooled once the agent had stopped (pods deleted
	// during the uninstall) are for an agent that will not come back; the
	// pods' interfaces went above. The plugin goes first: one still
	// running drops what it spools once it finds itself removed
	// (cni/README.md).
	r.removed("spooled cni DELs", removeSpool(cni.PendingDelDir(socket)))
	// An agent killed while binding its socket leaves the private
	// directory it binds in (cni/server: .cni-sock-*).
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(socket), ".cni-sock-*"))
	for _, d := range stale {
		res := Result{OK: true, Target: d, Detail: "removed (an agent stopped while binding its socket)", Changed: true}
		if err := os.RemoveAll(d); err != nil {
			res = Result{Target: d, Detail: err.Error()}
		}
		r.removed("stale cni socket dir", res)
	}
	r.removed("state dir", removeSeineDir(onNode(cfg.StateDir)))
	for _, res := range removeAuditLog(onNode(cmp.Or(cfg.PolicyAuditLogFile, auditlog.DefaultPath))) {
		r.removed("policy audit log", res)
	}
	r.removed("agent config", removeFile(configPath))
	for i, dir := range []string{filepath.Dir(socket), filepath.Dir(configPath)} {
		if i == 1 && dir == filepath.Dir(socket) {
			break
		}
		if res := removeEmptySeineDir(dir); res.Target != "" {
			r.removed("run dir", res)
		}
	}
	return r
}

// cleanNetwork runs the steps that go through the backend and OVS; it
// reports whether all of them succeeded.
func cleanNetwork(ctx context.Context, r *Report, cfg *agent.Config, db cleanupOVSDB, backend platform.Backend, timeout time.Duration) bool {
	step := func(name, target string, fn func(ctx context.Context) (string, error)) bool {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		detail, err := fn(sctx)
		return r.add(name, target, err, detail)
	}
	ok := step("pod interfaces", cfg.OVS.Bridge, func(ctx context.Context) (string, error) {
		return removePodInterfaces(ctx, db, backend)
	})
	teardown, canTeardown := backend.(platform.NodeTeardown)
	topo := platform.RoutedHost // LoadConfig accepts only the two
	if cfg.Topology == "bridgedUplink" {
		topo = platform.BridgedUplink
	}
	ok = step("node topology", cfg.Uplink, func(ctx context.Context) (string, error) {
		if !canTeardown {
			return "", platform.NotSupported("undoing the node's topology on this OS")
		}
		if err := teardown.Teardown(ctx, platform.NodeConfig{Topology: topo, Bridge: cfg.OVS.Bridge, Uplink: cfg.Uplink}); err != nil {
			return "", err
		}
		if topo == platform.BridgedUplink {
			return "the uplink " + cfg.Uplink + " has the node's addresses and routes back; gateway port deleted", nil
		}
		return "gateway port deleted", nil
	}) && ok
	// Only once the uplink has its addresses back: deleting the bridge
	// takes its internal port, which held them, away.
	if ok {
		ok = step("bridge", cfg.OVS.Bridge, func(ctx context.Context) (string, error) {
			return "deleted with its ports", db.DeleteBridge(ctx, cfg.OVS.Bridge)
		})
	} else {
		r.fail("bridge", cfg.OVS.Bridge, "kept: the node's topology was not undone, and the bridge may hold the node's address")
	}
	remover, canRemove := backend.(platform.HostRulesRemover)
	return step("host rules", "", func(ctx context.Context) (string, error) {
		if !canRemove {
			return "", platform.NotSupported("removing host rules on this OS")
		}
		return "routes and rules of Seine's removed", remover.RemoveHostRules(ctx)
	}) && ok
}

// removePodInterfaces removes the node side of every pod's interface the
// bridge has a port for (the pods lose their network, which they have
// lost anyway without Seine): veths are deleted, VFs given back.
func removePodInterfaces(ctx context.Context, db cleanupOVSDB, backend platform.Backend) (string, error) {
	ports, err := db.ListPorts(ctx, agent.PodPortMatch())
	if err != nil {
		return "", fmt.Errorf("list pod ports: %w", err)
	}
	var errs []error
	for _, p := range ports {
		ref, vf, err := agent.PodPort(p.ExternalIDs)
		if err == nil && ref.Validate() != nil {
			err = fmt.Errorf("external_ids %v do not name a pod", p.ExternalIDs)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("port %s: %w", p.Name, err))
			continue
		}
		if vf != nil {
			vfa, ok := backend.(platform.VFPodAttacher)
			if !ok {
				errs = append(errs, fmt.Errorf("port %s: give %s back: %w", p.Name, vf, platform.NotSupported("SR-IOV VF pods on this OS")))
				continue
			}
			err = vfa.DetachVF(ctx, ref, *vf)
		} else {
			err = backend.Detach(ctx, ref)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("port %s: %w", p.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d removed", len(ports)), nil
}

// removed records a file step's result.
func (r *Report) removed(name string, res Result) {
	res.Name = name
	r.Results = append(r.Results, res)
}

func removeFile(path string) Result {
	err := os.Remove(path)
	switch {
	case err == nil:
		return Result{OK: true, Target: path, Detail: "removed", Changed: true}
	case errors.Is(err, fs.ErrNotExist):
		return Result{OK: true, Target: path, Detail: "absent"}
	}
	return Result{Target: path, Detail: err.Error()}
}

// removeSpool removes the plugin's DEL spool directory and what it holds.
func removeSpool(dir string) Result {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return Result{OK: true, Target: dir, Detail: "absent"}
	}
	pending, _ := os.ReadDir(dir)
	if err := os.RemoveAll(dir); err != nil {
		return Result{Target: dir, Detail: err.Error()}
	}
	return Result{OK: true, Target: dir, Detail: fmt.Sprintf("removed (%d spooled)", len(pending)), Changed: true}
}

// removeAuditLog removes the policy audit log (path) and its rotated
// backups (core/auditlog: np-<time>.log, np-<time>.log.gz), then its
// directory and that directory's parent when they are empty and the
// parent is Seine's (/var/log/seine/networkpolicy, /var/log/seine); a
// directory holding anything else stays.
func removeAuditLog(path string) []Result {
	dir, base := filepath.Split(path)
	dir = filepath.Clean(dir)
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []Result{{OK: true, Target: path, Detail: "absent"}}
	}
	if err != nil {
		return []Result{{Target: dir, Detail: err.Error()}}
	}
	var out []Result
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !(n == base || strings.HasPrefix(n, stem+"-") && (strings.HasSuffix(n, ext) || strings.HasSuffix(n, ext+".gz"))) {
			continue
		}
		out = append(out, removeFile(filepath.Join(dir, n)))
	}
	parent := filepath.Dir(dir)
	if !seineDir(parent) {
		return out
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
		out = append(out, removeDirItself(dir))
	}
	if res := removeEmptySeineDir(parent); res.Target != "" {
		out = append(out, res)
	}
	return out
}

// seineDir: a directory node-cleanup may remove with everything in it
// only if its name says it is Seine's (/var/lib/seine): the configuration
// could name any directory.
func seineDir(dir string) bool {
	return filepath.IsAbs(dir) && strings.Contains(strings.ToLower(filepath.Base(dir)), "seine")
}

// removeSeineDir removes dir with its contents when it is Seine's. A mount
// point (a bind of the node's, as in the lab) cannot be removed: it is
// emptied.
func removeSeineDir(dir string) Result {
	if dir == "" {
		return Result{OK: true, Detail: "not configured"}
	}
	if !seineDir(dir) {
		return Result{OK: true, Target: dir, Detail: "left: its name does not say it is Seine's (remove it yourself)"}
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Result{OK: true, Target: dir, Detail: "absent"}
	}
	if err != nil {
		return Result{Target: dir, Detail: err.Error()}
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return Result{Target: dir, Detail: err.Error(), Changed: true}
		}
	}
	return removeDirItself(dir)
}

// removeEmptySeineDir removes dir when it is Seine's and empty; a Result
// without Target when there is nothing to say.
func removeEmptySeineDir(dir string) Result {
	if !seineDir(dir) {
		return Result{}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		if errors.Is(err, fs.ErrNotExist) {
			return Result{}
		}
		return Result{OK: true, Target: dir, Detail: "left: not empty"}
	}
	return removeDirItself(dir)
}

func removeDirItself(dir string) Result {
	err := os.Remove(dir)
	switch {
	case err == nil:
		return Result{OK: true, Target: dir, Detail: "removed", Changed: true}
	case errors.Is(err, syscall.EBUSY):
		return Result{OK: true, Target: dir, Detail: "emptied (a mount point: the directory itself stays)", Changed: true}
	case errors.Is(err, fs.ErrNotExist):
		return Result{OK: true, Target: dir, Detail: "absent"}
	}
	return Result{Target: dir, Detail: err.Error()}
}
