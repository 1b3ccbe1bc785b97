package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/seine-cni/seine/cni"
)

// CNIConfFile is the network configuration the agent writes once ready.
const CNIConfFile = "10-seine.conflist"

// writeCNIConfig writes the runtime's network configuration (atomically) to
// cniConfDir: its appearance is what turns the node Ready.
func (a *Agent) writeCNIConfig() error {
	if a.cfg.CNIConfDir == "" {
		return nil
	}
	conf := map[string]any{
		"cniVersion": cni.ResultVersion,
		"name":       "seine",
		// The deviceID capability makes libcni runtimes (and Multus) pass an
		// SR-IOV device plugin's allocation as runtimeConfig.deviceID, and
		// portMappings the pod's host ports as runtimeConfig.portMappings
		// (containerd and CRI-O pass them only to a plugin that declares it).
		"plugins": []map[string]any{{"type": cni.PluginType, "socketPath": a.cfg.CNISocket,
			"capabilities": map[string]bool{"deviceID": true, "portMappings": true}}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.cfg.CNIConfDir, 0o755); err != nil {
		return fmt.Errorf("cni config: %w", err)
	}
	path := filepath.Join(a.cfg.CNIConfDir, CNIConfFile)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b)+"\n" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cni config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cni config: %w", err)
	}
	return nil
}
