package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestGetOnARealNode reads pods and flows back from a real Seine node
// (test/agenttest: seine-agent on a private OVS, a pod added through
// seine-cni as a runtime adds it).
func TestGetOnARealNode(t *testing.T) {
	n := agenttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	podNS := ovsdaemon.NewNetNS(t)
	rt := &libcni.RuntimeConf{
		ContainerID: "c0ffee0123456789", NetNS: podNS, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "cart-0"}},
	}
	if _, err := n.CNI.AddNetworkList(ctx, n.Config, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	t.Cleanup(func() { n.CNI.DelNetworkList(context.Background(), n.Config, rt) })
	config := filepath.Join(t.TempDir(), "seine-agent.yaml")
	mustWrite(t, config, fmt.Sprintf(`nodeName: node-1
ovs: {dbEndpoint: %q, runDir: %q, bridge: br-int}
topology: routedHost
trafficMode: encap
tunnelType: geneve
cniSocket: /unused/cni.sock
stateDir: /unused
`, n.OVS.DBEndpoint(), n.OVS.RunDir()), 0o644)

	get := func(args ...string) []byte {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(ctx, append([]string{"get"}, append(args, "--config", config)...), &stdout, &stderr, nil); err != nil {
			t.Fatalf("get %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.Bytes()
	}
	var pods []localPod
	if err := json.Unmarshal(get("pods", "-o", "json"), &pods); err != nil {
		t.Fatal(err)
	}
	if len(pods) != 1 {
		t.Fatalf("pods %+v, want shop/cart-0", pods)
	}
	p := pods[0]
	if p.Namespace != "shop" || p.Name != "cart-0" || p.IPs != "10.244.1.2/24" || p.ContainerID != rt.ContainerID ||
		p.IfName != "eth0" || p.NetNS != podNS || p.OFPort <= 0 || p.Port == "" || p.MAC == "" {
		t.Errorf("pod %+v", p)
	}
	if table := string(get("pods")); !strings.Contains(table, "shop       cart-0  10.244.1.2/24") {
		t.Errorf("pods table:\n%s", table)
	}

	var flows []flowEntry
	if err := json.Unmarshal(get("flows", "-o", "json"), &flows); err != nil {
		t.Fatal(err)
	}
	spoof := -1
	for i, f := range flows {
		if i > 0 && (f.Table < flows[i-1].Table || f.Table == flows[i-1].Table && f.Priority > flows[i-1].Priority) {
			t.Errorf("flow %d out of pipeline order: %+v after %+v", i, f, flows[i-1])
		}
		if strings.Contains(f.Flow, "nw_src=10.244.1.2") && spoof < 0 {
			spoof = i
		}
	}
	if spoof < 0 {
		t.Fatalf("no flow matches the pod's source address among %d flows", len(flows))
	}
	// --table keeps that table's flows only.
	one := strings.Split(strings.TrimSpace(string(get("flows", "--table", fmt.Sprint(flows[spoof].Table)))), "\n")
	want := regexp.MustCompile(fmt.Sprintf(`(^|, )table=%d,`, flows[spoof].Table))
	for _, line := range one {
		if !want.MatchString(line) {
			t.Errorf("--table %d printed %q", flows[spoof].Table, line)
		}
	}
	if !strings.Contains(strings.Join(one, "\n"), "nw_src=10.244.1.2") {
		t.Errorf("--table %d lacks the pod's flow:\n%s", flows[spoof].Table, strings.Join(one, "\n"))
	}
}
