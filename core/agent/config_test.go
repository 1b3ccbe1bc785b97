package agent

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
)

const labConfig = `nodeName: node-1
kubeconfig: /run/seine-lab/kubeconfig/seine-agent.conf
ovs:
  dbEndpoint: unix:/run/seine-lab/nodes/node-1/ovs/run/db.sock
  runDir: /run/seine-lab/nodes/node-1/ovs/run
  bridge: br-int
  datapathType: netdev
topology: bridgedUplink
uplink: eth0
trafficMode: encap
tunnelType: geneve
mtu: 0
cniSocket: /run/seine-lab/nodes/node-1/seine/cni.sock
cniConfDir: /run/seine-lab/nodes/node-1/cni/net.d
stateDir: /run/seine-lab/nodes/node-1/seine
healthAddress: 127.0.0.1:10350
`

// osPaths makes the lab's absolute paths absolute on the OS the test runs
// on (C:/run/... on Windows).
func osPaths(s string) string {
	if runtime.GOOS == "windows" {
		return strings.ReplaceAll(s, " /run/", " C:/run/")
	}
	return s
}

func TestParseConfig(t *testing.T) {
	labConfig := osPaths(labConfig)
	cfg, err := ParseConfig([]byte(labConfig))
	if err != nil {
		t.Fatalf("the lab's config: %v", err)
	}
	if cfg.NodeName != "node-1" || cfg.OVS.Bridge != "br-int" || cfg.OVS.DatapathType != "netdev" || cfg.HealthAddress != "127.0.0.1:10350" {
		t.Errorf("parsed %+v", cfg)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"unknown key", "mtu: 0", "mtu: 0\nclusterCIDR: 10.0.0.0/8", `unknown field "clusterCIDR"`},
		{"unknown nested key", "bridge: br-int", "bridge: br-int\n  socket: x", `unknown field "socket"`},
		{"topology", "topology: bridgedUplink", "topology: overlay", `topology "overlay"`},
		{"traffic mode", "trafficMode: encap", "trafficMode: tunnel", `trafficMode "tunnel"`},
		{"tunnel type", "tunnelType: geneve", "tunnelType: stt", `tunnelType "stt"`},
		{"datapath", "datapathType: netdev", "datapathType: dpdk", `datapathType "dpdk"`},
		{"mtu", "mtu: 0", "mtu: 100", "mtu 100"},
		{"relative path", "stateDir: /run/seine-lab/nodes/node-1/seine", "stateDir: seine", "want an absolute path"},
		{"no node name", "nodeName: node-1", "nodeName: ''", "nodeName is required"},
		{"bad endpoint", "dbEndpoint: unix:/run", "dbEndpoint: ftp:/run", "ovs.dbEndpoint"},
		{"health address", "healthAddress: 127.0.0.1:10350", "healthAddress: localhost", "healthAddress"},
		{"uplink", "uplink: eth0", "uplink: ''", "uplink is required"},
		{"not yaml", "nodeName: node-1", "nodeName: [", "decode"},
		{"flow set os", "mtu: 0", "mtu: 0\nflowSetOS: darwin", `flowSetOS "darwin"`},
		{"host rules resync", "mtu: 0", "mtu: 0\nhostRulesResyncPeriod: 100ms", "hostRulesResyncPeriod 100ms: want at least 1s"},
		{"host rules resync syntax", "mtu: 0", "mtu: 0\nhostRulesResyncPeriod: often", "decode"},
		{"windows flow set routed", "topology: bridgedUplink", "topology: routedHost\nflowSetOS: windows", "flowSetOS windows needs topology bridgedUplink"},
		{"gc percent", "mtu: 0", "mtu: 0\ngcPercent: -1", "gcPercent -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(strings.Replace(labConfig, osPaths(tc.from), osPaths(tc.to), 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	win, err := ParseConfig([]byte(strings.Replace(labConfig, "mtu: 0", "mtu: 0\nflowSetOS: windows", 1)))
	if err != nil {
		t.Fatalf("flowSetOS windows: %v", err)
	}
	if got := nodeOS(win); got != pipeline.OSWindows {
		t.Errorf("flowSetOS windows builds the pipeline for %q", got)
	}
	if got := nodeOS(cfg); got != pipeline.OS(runtime.GOOS) {
		t.Errorf("without flowSetOS an agent on %s builds the pipeline for %q", runtime.GOOS, got)
	}
	if got := cfg.hostRulesResyncPeriod(); got != DefaultHostRulesResyncPeriod {
		t.Errorf("host rules resync period without the key: %s, want %s", got, DefaultHostRulesResyncPeriod)
	}
	fast, err := ParseConfig([]byte(strings.Replace(labConfig, "mtu: 0", "mtu: 0\nhostRulesResyncPeriod: 5s", 1)))
	if err != nil || fast.hostRulesResyncPeriod() != 5*time.Second {
		t.Errorf("hostRulesResyncPeriod: 5s: %v, %v", err, fast)
	}
	// The GC target: the default, the configured one, or GOGC's.
	noEnv := func(string) string { return "" }
	if got := cfg.gcPercent(noEnv); got != DefaultGCPercent {
		t.Errorf("gcPercent without the key: %d, want %d", got, DefaultGCPercent)
	}
	gc, err := ParseConfig([]byte(strings.Replace(labConfig, "mtu: 0", "mtu: 0\ngcPercent: 80", 1)))
	if err != nil || gc.gcPercent(noEnv) != 80 {
		t.Errorf("gcPercent: 80: %v, %v", err, gc)
	}
	if got := gc.gcPercent(func(k string) string { return map[string]string{"GOGC": "200"}[k] }); got != -1 {
		t.Errorf("gcPercent with GOGC=200 in the environment: %d, want -1 (GOGC's)", got)
	}
	// noEncap needs no tunnel type.
	if _, err := ParseConfig([]byte(strings.NewReplacer("trafficMode: encap", "trafficMode: noEncap", "tunnelType: geneve\n", "").Replace(labConfig))); err != nil {
		t.Errorf("noEncap without a tunnel type: %v", err)
	}
}
