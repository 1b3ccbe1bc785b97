package nodecheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent"
)

// PrepOptions say how `seinectl node-prep` prepares (or, with CheckOnly,
// checks) this node for seine-agent.
type PrepOptions struct {
	// ConfigPath is the agent configuration: read, or written from
	// TemplatePath when that is set.
	ConfigPath string
	// TemplatePath is an agent configuration whose nodeName NodeName
	// replaces (the DaemonSet's ConfigMap holds one for every node).
	TemplatePath string
	// NodeName is this node's name; with CheckOnly and no template, the
	// configuration must name it.
	NodeName string
	// CNIBinDir is the runtime's plugin directory; InstallCNI, when set, is
	// the seine-cni binary to install there under the plugin's name.
	CNIBinDir  string
	InstallCNI string
	// CheckOnly reports what would change, changing nothing.
	CheckOnly bool
	// PrivateConfigDir makes the configuration's directory private
	// (StateDirMode) rather than public: on Windows it is the agent's data
	// directory, with its kubeconfig, state, CNI socket and DEL spool.
	PrivateConfigDir bool
	// Host is the OS seam (UnixHost if nil).
	Host Host
}

// Directory modes node-prep gives.
const (
	// PublicDirMode is for directories other components read: the
	// configuration, the CNI socket's, the runtime's CNI directories.
	PublicDirMode fs.FileMode = 0o755
	// StateDirMode is for the agent's state (IPAM allocations, cached
	// policies): root only.
	StateDirMode fs.FileMode = 0o700
)

// Prep prepares the node, or checks it with o.CheckOnly. Steps: the agent
// configuration (rendered from the template), the directories the agent and
// the runtime use, the uplink, the CNI plugin binary.
func Prep(o PrepOptions) *Report {
	host := o.Host
	if host == nil {
		host = UnixHost{}
	}
	r := &Report{}
	configDirMode := PublicDirMode
	if o.PrivateConfigDir {
		configDirMode = StateDirMode
	}
	cfg, err := prepConfig(r, o, host, configDirMode)
	if err != nil {
		r.fail("agent config", o.ConfigPath, err.Error())
		return r
	}
	dirs := []struct {
		name, path string
		mode       fs.FileMode
	}{
		{"config dir", filepath.Dir(o.ConfigPath), configDirMode},
		{"state dir", cfg.StateDir, StateDirMode},
		{"cni socket dir", filepath.Dir(cfg.CNISocket), PublicDirMode},
		{"cni conf dir", cfg.CNIConfDir, PublicDirMode},
		{"cni bin dir", o.CNIBinDir, PublicDirMode},
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if d.path == "" || seen[d.path] {
			continue
		}
		seen[d.path] = true
		r.step(o.CheckOnly, d.name, d.path,
			func() error { return host.CheckDir(d.path, d.mode) },
			func() (bool, error) { return host.EnsureDir(d.path, d.mode) },
			modeDetail(host, d.mode))
	}
	// The OVS run directory is Open vSwitch's: checked, never created.
	if fi, err := os.Stat(cfg.OVS.RunDir); err != nil || !fi.IsDir() {
		r.fail("ovs run dir", cfg.OVS.RunDir, fmt.Sprintf("%v: is Open vSwitch installed and running?", cmpErr(err, "not a directory")))
	} else {
		r.ok("ovs run dir", cfg.OVS.RunDir, "exists")
	}
	if cfg.Uplink == "" {
		r.ok("uplink", "", "not configured: the agent uses the interface holding the node IP")
	} else if ifc, err := net.InterfaceByName(cfg.Uplink); err != nil {
		r.fail("uplink", cfg.Uplink, fmt.Sprintf("interface %s: %v", cfg.Uplink, err))
	} else {
		r.ok("uplink", cfg.Uplink, fmt.Sprintf("index %d, mtu %d, %s", ifc.Index, ifc.MTU, ifc.HardwareAddr))
	}
	if o.InstallCNI != "" {
		if o.CNIBinDir == "" {
			r.fail("cni plugin", "", "an install source was given without a CNI bin directory")
			return r
		}
		dst := filepath.Join(o.CNIBinDir, host.PluginFile(cni.PluginType))
		r.step(o.CheckOnly, "cni plugin", dst,
			func() error { return sameFile(o.InstallCNI, dst) },
			func() (bool, error) { return installFile(o.InstallCNI, dst) },
			"installed from "+o.InstallCNI)
	}
	return r
}

// modeDetail says what access a directory of mode gets on host.
func modeDetail(host Host, mode fs.FileMode) string {
	if w, ok := host.(WindowsHost); ok {
		switch {
		case w.ACL == nil:
			return "exists"
		case mode&0o077 == 0:
			return "SYSTEM and Administrators only"
		default:
			return "written by SYSTEM and Administrators only"
		}
	}
	return fmt.Sprintf("mode %04o", mode)
}

func cmpErr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

// step checks (CheckOnly) or ensures one thing.
func (r *Report) step(checkOnly bool, name, target string, check func() error, ensure func() (bool, error), detail string) {
	if checkOnly {
		r.add(name, target, check(), detail)
		return
	}
	changed, err := ensure()
	if r.add(name, target, err, detail) && changed {
		r.Results[len(r.Results)-1].Changed = true
	}
}

// prepConfig renders the configuration from the template (or checks the
// rendered one) and returns it.
func prepConfig(r *Report, o PrepOptions, host Host, configDirMode fs.FileMode) (*agent.Config, error) {
	if o.TemplatePath == "" {
		cfg, err := agent.LoadConfig(o.ConfigPath)
		if err != nil {
			return nil, err
		}
		if o.NodeName != "" && cfg.NodeName != o.NodeName {
			return nil, fmt.Errorf("nodeName is %q, want %q", cfg.NodeName, o.NodeName)
		}
		r.ok("agent config", o.ConfigPath, describeConfig(cfg))
		return cfg, nil
	}
	if o.NodeName == "" {
		return nil, errors.New("a template needs the node name (--node-name)")
	}
	tmpl, err := os.ReadFile(o.TemplatePath)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	rendered, err := RenderConfig(tmpl, o.NodeName)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", o.TemplatePath, err)
	}
	cfg, err := agent.ParseConfig(rendered)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", o.TemplatePath, err)
	}
	have, _ := os.ReadFile(o.ConfigPath)
	same := bytes.Equal(have, rendered)
	switch {
	case o.CheckOnly && !same:
		return nil, fmt.Errorf("differs from the template rendered for node %s", o.NodeName)
	case !o.CheckOnly && !same:
		if _, err := host.EnsureDir(filepath.Dir(o.ConfigPath), configDirMode); err != nil {
			return nil, err
		}
		if err := writeAtomic(o.ConfigPath, rendered, 0o644); err != nil {
			return nil, err
		}
	}
	r.Results = append(r.Results, Result{Name: "agent config", OK: true, Target: o.ConfigPath,
		Detail: describeConfig(cfg) + " (from " + o.TemplatePath + ")", Changed: !same})
	return cfg, nil
}

// RenderConfig returns the agent configuration template with nodeName set.
// The output is YAML with sorted keys (the template's comments are dropped).
func RenderConfig(tmpl []byte, nodeName string) ([]byte, error) {
	js, err := yaml.YAMLToJSON(tmpl)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("empty configuration")
	}
	m["nodeName"] = nodeName
	return yaml.Marshal(m)
}

func sameFile(src, dst string) error {
	a, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		return err
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("differs from %s", src)
	}
	return nil
}

// installFile copies src to dst (mode 0755) unless dst already has the same
// content. The copy is renamed into place, so a runtime never executes a
// half-written plugin.
func installFile(src, dst string) (bool, error) {
	if sameFile(src, dst) == nil {
		return false, nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return false, err
	}
	return true, writeAtomic(dst, b, 0o755)
}

func writeAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
