package nodecheck

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/ovs/ovsdb"
)

// CheckOptions say what `seinectl check` looks at.
type CheckOptions struct {
	// ConfigPath is the agent's configuration file.
	ConfigPath string
	// Binaries are the programs that must be installed (full paths).
	Binaries []string
	// CNIConfDir is where the runtime reads network configurations; empty
	// means the config's cniConfDir.
	CNIConfDir string
	// Host is the OS seam (UnixHost if nil).
	Host Host
	// OpenFlowDialer reaches the bridge's management socket (openflow's
	// default if nil; openflow.PipeDialer on Windows).
	OpenFlowDialer openflow.Dialer
	// Timeout bounds each network check (OVSDB, OpenFlow, health); 0 means 5s.
	Timeout time.Duration
	// Logger receives the OVS clients' logs; nil discards them.
	Logger *slog.Logger
	// PrivateDirs checks that the configuration's directory and the state
	// directory are private (Host.CheckDir with StateDirMode): on Windows
	// they hold the agent's kubeconfig, state, CNI socket and DEL spool.
	PrivateDirs bool
}

// Check runs the install checks of this node and returns every result;
// a failed check does not stop the others, except that those needing the
// agent configuration fail with "no agent config" when it does not load.
func Check(ctx context.Context, o CheckOptions) *Report {
	host := o.Host
	if host == nil {
		host = UnixHost{}
	}
	timeout := cmp.Or(o.Timeout, 5*time.Second)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Report{}
	for _, b := range o.Binaries {
		name := "binary " + filepath.Base(b)
		fi, err := os.Stat(b)
		if err == nil {
			err = host.Executable(b, fi)
		}
		r.add(name, b, err, fmt.Sprintf("%d bytes", sizeOf(fi)))
	}
	cfg, err := agent.LoadConfig(o.ConfigPath)
	if !r.add("agent config", o.ConfigPath, err, describeConfig(cfg)) {
		for _, n := range []string{"cni conflist", "cni socket", "ovsdb", "openflow", "agent /healthz", "agent /readyz"} {
			r.fail(n, "", "skipped: no agent config")
		}
		return r
	}
	if o.PrivateDirs {
		seen := map[string]bool{}
		for _, d := range []struct{ name, path string }{
			{"config dir access", filepath.Dir(o.ConfigPath)}, {"state dir access", cfg.StateDir},
		} {
			if !seen[d.path] {
				seen[d.path] = true
				r.add(d.name, d.path, host.CheckDir(d.path, StateDirMode), modeDetail(host, StateDirMode))
			}
		}
	}
	confDir := cmp.Or(o.CNIConfDir, cfg.CNIConfDir)
	if confDir == "" {
		r.fail("cni conflist", "", "the config has no cniConfDir and none was given (--cni-conf-dir)")
	} else {
		path := filepath.Join(confDir, agent.CNIConfFile)
		detail, err := checkConflist(path, cfg.CNISocket)
		r.add("cni conflist", path, err, detail)
	}
	if fi, err := os.Stat(cfg.CNISocket); err != nil {
		r.fail("cni socket", cfg.CNISocket, fmt.Sprintf("%v (the agent creates it when it serves CNI)", err))
	} else {
		r.ok("cni socket", cfg.CNISocket, fmt.Sprintf("exists (%v)", fi.Mode()))
	}
	withTimeout := func(fn func(context.Context) (string, error)) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return fn(ctx)
	}
	detail, err := withTimeout(func(ctx context.Context) (string, error) { return checkOVSDB(ctx, log, cfg) })
	r.add("ovsdb", cfg.OVS.DBEndpoint, err, detail)
	mgmt := MgmtAddr(cfg)
	detail, err = withTimeout(func(ctx context.Context) (string, error) {
		return checkOpenFlow(ctx, log, mgmt, cfg.OVS.Bridge, o.OpenFlowDialer)
	})
	r.add("openflow", mgmt, err, detail)
	client := &http.Client{Timeout: timeout}
	for _, path := range []string{"/healthz", "/readyz"} {
		if cfg.HealthAddress == "" {
			r.fail("agent "+path, "", "the config has no healthAddress")
			continue
		}
		url := "http://" + cfg.HealthAddress + path
		detail, err := withTimeout(func(ctx context.Context) (string, error) { return getHealth(ctx, client, url) })
		r.add("agent "+path, url, err, detail)
	}
	return r
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

func describeConfig(cfg *agent.Config) string {
	if cfg == nil {
		return ""
	}
	return fmt.Sprintf("node %s, bridge %s, %s %s", cfg.NodeName, cfg.OVS.Bridge, cfg.Topology, cfg.TrafficMode)
}

// MgmtAddr is the OpenFlow address of the agent's bridge: the
// <bridge>.mgmt socket in the OVS run directory (OVS for Windows serves it
// as a named pipe, which openflow.PipeDialer derives from the same path).
func MgmtAddr(cfg *agent.Config) string {
	return "unix:" + filepath.Join(cfg.OVS.RunDir, cfg.OVS.Bridge+".mgmt")
}

// checkConflist validates the runtime's network configuration: it parses as
// a conflist, Seine's plugin is in it with a valid configuration pointing
// at the agent's socket, and no other conflist sorts before it (the runtime
// uses the first).
func checkConflist(path, socket string) (string, error) {
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		return "", err
	}
	var seine *cni.NetConf
	for _, p := range list.Plugins {
		if p.Network.Type != cni.PluginType {
			continue
		}
		// A runtime hands each plugin of a list its configuration with
		// the list's name and cniVersion; check what the plugin will get.
		var conf map[string]any
		if err := json.Unmarshal(p.Bytes, &conf); err != nil {
			return "", fmt.Errorf("plugin %q: %w", cni.PluginType, err)
		}
		conf["name"], conf["cniVersion"] = list.Name, list.CNIVersion
		b, err := json.Marshal(conf)
		if err != nil {
			return "", err
		}
		if seine, err = cni.ParseNetConf(b); err != nil {
			return "", fmt.Errorf("plugin %q: %w", cni.PluginType, err)
		}
	}
	if seine == nil {
		return "", fmt.Errorf("network %q has no %q plugin", list.Name, cni.PluginType)
	}
	if seine.Socket() != socket {
		return "", fmt.Errorf("socketPath %s, but the agent listens on %s", seine.Socket(), socket)
	}
	files, err := libcni.ConfFiles(filepath.Dir(path), []string{".conf", ".conflist", ".json"})
	if err != nil {
		return "", err
	}
	slices.Sort(files)
	if len(files) > 0 && files[0] != path {
		return "", fmt.Errorf("%s sorts first: the runtime uses it, not Seine's", filepath.Base(files[0]))
	}
	return fmt.Sprintf("network %s, cniVersion %s", list.Name, list.CNIVersion), nil
}

func checkOVSDB(ctx context.Context, log *slog.Logger, cfg *agent.Config) (string, error) {
	c, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: cfg.OVS.DBEndpoint, Logger: log})
	if err != nil {
		return "", err
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	br, err := c.Bridge(ctx, cfg.OVS.Bridge)
	if errors.Is(err, ovsdb.ErrBridgeNotFound) {
		return "", fmt.Errorf("ovs %s: bridge %s does not exist (the agent creates it at start)", v, cfg.OVS.Bridge)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("ovs %s, bridge %s (%s, %d ports)", v, br.Name, cmp.Or(br.DatapathType, "system"), len(br.Ports)), nil
}

func checkOpenFlow(ctx context.Context, log *slog.Logger, addr, bridge string, dial openflow.Dialer) (string, error) {
	c, err := openflow.Dial(ctx, addr, openflow.Config{Logger: log, Dialer: dial})
	if err != nil {
		return "", err
	}
	defer c.Close()
	st, err := c.Aggregate(ctx, openflow.TableAll, 0, 0)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: %d flows", bridge, st.FlowCount), nil
}

func getHealth(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	body := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return body, nil
}
