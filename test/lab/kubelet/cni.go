package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/test/lab/netns"
)

// errNoNetwork means CNIConfDir holds no usable network configuration.
var errNoNetwork = errors.New("no network config found")

const podIfName = "eth0"

// loadNetwork returns the first configuration in CNIConfDir (lexical order) that parses
// and has plugins, as containerd and CRI-O choose their default network.
func (k *kubelet) loadNetwork() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(k.cfg.CNIConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("%w in %s: %w", errNoNetwork, k.cfg.CNIConfDir, err)
	}
	for _, f := range files { // ConfFiles returns them sorted
		list, err := loadConfFile(f)
		if err != nil {
			k.log.Warn("skipping CNI config", "file", f, "err", err)
			continue
		}
		return list, nil
	}
	return nil, fmt.Errorf("%w in %s", errNoNetwork, k.cfg.CNIConfDir)
}

func loadConfFile(file string) (*libcni.NetworkConfigList, error) {
	if filepath.Ext(file) == ".conflist" {
		return libcni.NetworkConfFromFile(file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	conf, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == "" {
		return nil, fmt.Errorf("%s: no plugin type", file)
	}
	return libcni.ConfListFromConf(conf)
}

// networkReady reports whether pods can get a network: a configuration exists and, for
// CNI >= 1.1, its plugins answer STATUS. The error says why not.
func (k *kubelet) networkReady(ctx context.Context) error {
	list, err := k.loadNetwork()
	if err != nil {
		return err
	}
	return k.inNodeNS(func() error { return k.cni.GetStatusNetworkList(ctx, list) })
}

// pluginExec is libcni's default plugin executor with the plugins' stderr logged. Giving
// libcni one explicitly also keeps it from lazily creating its own, which races when
// several pods are set up at once.
func pluginExec(log *slog.Logger) invoke.Exec {
	return &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: &stderrLog{log: log}},
		PluginDecoder: version.PluginDecoder{},
	}
}

// stderrLog logs what CNI plugins write to stderr, a line per record.
type stderrLog struct{ log *slog.Logger }

func (w *stderrLog) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Warn("CNI plugin stderr", "line", line)
		}
	}
	return len(p), nil
}

// inNodeNS runs fn where CNI plugins must run: in the node's network namespace.
func (k *kubelet) inNodeNS(fn func() error) error {
	return netns.Do(k.cfg.NodeNetNS, fn)
}

// runtimeConf is what a runtime passes for a pod sandbox.
func runtimeConf(rec *sandboxRecord, pod *corev1.Pod) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: rec.ContainerID,
		NetNS:       rec.NetNS,
		IfName:      podIfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", rec.Namespace},
			{"K8S_POD_NAME", rec.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", rec.ContainerID},
			{"K8S_POD_UID", string(rec.UID)},
		},
	}
	if pod != nil {
		caps := map[string]any{}
		if len(pod.Annotations) > 0 {
			caps["io.kubernetes.cri.pod-annotations"] = pod.Annotations
		}
		var mappings []map[string]any
		for _, p := range podPorts(pod) {
			if p.HostPort == 0 {
				continue
			}
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			mappings = append(mappings, map[string]any{
				"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": proto, "hostIP": p.HostIP,
			})
		}
		if mappings != nil {
			caps["portMappings"] = mappings
		}
		if len(caps) > 0 {
			rt.CapabilityArgs = caps
		}
	}
	return rt
}

// cniAdd runs ADD for rec's sandbox and returns the pod IPs from the result.
func (k *kubelet) cniAdd(ctx context.Context, list *libcni.NetworkConfigList, rec *sandboxRecord, pod *corev1.Pod) ([]string, error) {
	var res cnitypes.Result
	err := k.inNodeNS(func() (err error) {
		res, err = k.cni.AddNetworkList(ctx, list, runtimeConf(rec, pod))
		return err
	})
	if err != nil {
		return nil, err
	}
	return resultIPs(res)
}

// resultIPs picks the pod IPs from a CNI result: addresses on sandbox interfaces (or on
// no interface), at most one per family, in result order.
func resultIPs(res cnitypes.Result) ([]string, error) {
	cur, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI result: %w", err)
	}
	var ips []string
	var have4, have6 bool
	for _, ipc := range cur.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(cur.Interfaces) || cur.Interfaces[i].Sandbox == "" {
				continue // a host-side address
			}
		}
		addr, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		if (addr.Is4() && have4) || (addr.Is6() && have6) {
			continue
		}
		have4, have6 = have4 || addr.Is4(), have6 || addr.Is6()
		ips = append(ips, addr.String())
	}
	if len(ips) == 0 {
		return nil, errors.New("CNI result has no pod IP")
	}
	return ips, nil
}

// cniDel runs DEL for rec with the configuration cached at ADD (what the sandbox was set
// up with), falling back to the current one when nothing was cached (ADD never finished).
func (k *kubelet) cniDel(ctx context.Context, rec *sandboxRecord) error {
	rt := runtimeConf(rec, nil)
	list, cachedRT, err := k.cachedNetwork(rec, rt)
	if err != nil {
		k.log.Warn("unreadable CNI cache, deleting with the current config", "pod", rec.Namespace+"/"+rec.Name, "err", err)
	}
	if list == nil {
		if list, err = k.loadNetwork(); err != nil {
			return fmt.Errorf("cni del: %w", err)
		}
	} else {
		rt = cachedRT
	}
	return k.inNodeNS(func() error { return k.cni.DelNetworkList(ctx, list, rt) })
}

// cniCheck runs CHECK for rec with the cached configuration and result.
func (k *kubelet) cniCheck(ctx context.Context, rec *sandboxRecord) error {
	rt := runtimeConf(rec, nil)
	list, cachedRT, err := k.cachedNetwork(rec, rt)
	if err != nil {
		return err
	}
	if list == nil {
		return fmt.Errorf("cni check: no cached ADD for sandbox %s", rec.ContainerID)
	}
	return k.inNodeNS(func() error { return k.cni.CheckNetworkList(ctx, list, cachedRT) })
}

// cachedNetwork returns libcni's cached configuration for rec, or nil if there is none.
func (k *kubelet) cachedNetwork(rec *sandboxRecord, rt *libcni.RuntimeConf) (*libcni.NetworkConfigList, *libcni.RuntimeConf, error) {
	if rec.Network == "" {
		return nil, nil, nil
	}
	b, cachedRT, err := k.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: rec.Network}, rt)
	if err != nil || b == nil {
		return nil, nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("cached CNI config for %s: %w", rec.ContainerID, err)
	}
	return list, cachedRT, nil
}
