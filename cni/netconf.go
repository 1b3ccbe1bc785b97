package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// PluginType is the "type" of Seine's network configuration, and so the name
// of the plugin binary in the runtime's CNI bin directory.
const PluginType = "seine"

// SupportedVersions are the CNI spec versions the plugin speaks.
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

const (
	// DefaultRequestTimeout bounds one request to the agent. It is below
	// kubelet's default 2m runtime request timeout so that the runtime sees
	// Seine's error rather than its own.
	DefaultRequestTimeout = 60 * time.Second
	// MaxRequestTimeout is the largest requestTimeout a config may set.
	MaxRequestTimeout = 10 * time.Minute
)

// NetConf is Seine's network configuration:
//
//	{
//	  "cniVersion": "1.1.0",
//	  "name": "seine",
//	  "type": "seine",
//	  "socketPath": "/var/run/seine/cni.sock",  // optional
//	  "requestTimeout": "60s"                   // optional, a Go duration
//	}
//
// Keys Seine does not know are ignored, as the spec allows; an "ipam"
// section is refused because the agent allocates pod IPs itself.
type NetConf struct {
	types.PluginConf
	SocketPath     string                     `json:"socketPath,omitempty"`
	RequestTimeout string                     `json:"requestTimeout,omitempty"`
	RuntimeConfig  map[string]json.RawMessage `json:"runtimeConfig,omitempty"`
	// DeviceID is the top-level "deviceID" Multus writes into a delegate's
	// configuration for a network whose resource (k8s.v1.cni.cncf.io/resourceName)
	// a device plugin allocated; see VFDeviceID.
	DeviceID string `json:"deviceID,omitempty"`

	// Timeout is RequestTimeout parsed, or DefaultRequestTimeout.
	Timeout time.Duration `json:"-"`
}

// Socket is the agent socket this configuration points at.
func (c *NetConf) Socket() string {
	if c.SocketPath != "" {
		return c.SocketPath
	}
	return DefaultSocketPath()
}

// ParseNetConf decodes and validates a network configuration. Its errors
// are *types.Error with the CNI code a runtime expects: 6 for undecodable
// JSON, 1 for an unsupported cniVersion, 2 for an unsupported field and 7
// for a missing or invalid one.
func ParseNetConf(raw []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(raw, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
	}
	if !slices.Contains(SupportedVersions, conf.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("network config cniVersion %q is not supported by seine-cni", conf.CNIVersion),
			fmt.Sprintf("supported versions: %v", SupportedVersions))
	}
	if conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `network config has no "name"`, "")
	}
	if conf.Type != PluginType {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network config type is %q, want %q", conf.Type, PluginType), "")
	}
	if conf.IPAM.Type != "" {
		return nil, types.NewError(types.ErrUnsupportedField,
			fmt.Sprintf(`unsupported field "ipam": {"type": %q}: seine-agent allocates pod IPs from the node's podCIDR; remove the ipam section`, conf.IPAM.Type), "")
	}
	if conf.SocketPath != "" && !filepath.IsAbs(conf.SocketPath) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("socketPath %q is not an absolute path", conf.SocketPath), "")
	}
	conf.Timeout = DefaultRequestTimeout
	if conf.RequestTimeout != "" {
		d, err := time.ParseDuration(conf.RequestTimeout)
		if err != nil || d <= 0 || d > MaxRequestTimeout {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("requestTimeout %q is not a duration between 0 and %s (for example \"60s\")", conf.RequestTimeout, MaxRequestTimeout), "")
		}
		conf.Timeout = d
	}
	if _, err := conf.VFDeviceID(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: %v", err), "")
	}
	return conf, nil
}

// VFDeviceID is the PCI address of the SR-IOV VF the runtime allocated to
// the pod, or "" for a veth pod. It arrives as runtimeConfig.deviceID (the
// "deviceID" capability: Multus and libcni runtimes pass it so) or as the
// top-level "deviceID" Multus writes into the configuration; when both are
// present they must agree.
func (c *NetConf) VFDeviceID() (string, error) {
	var rt string
	if raw, ok := c.RuntimeConfig["deviceID"]; ok {
		if err := json.Unmarshal(raw, &rt); err != nil {
			return "", fmt.Errorf("runtimeConfig.deviceID %s: want a string (a PCI address)", raw)
		}
	}
	if rt != "" && c.DeviceID != "" && rt != c.DeviceID {
		return "", fmt.Errorf("runtimeConfig.deviceID %q and deviceID %q differ", rt, c.DeviceID)
	}
	if rt != "" {
		return rt, nil
	}
	return c.DeviceID, nil
}
