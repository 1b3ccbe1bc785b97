//go:build linux

package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/go-ipfix/pkg/collector"
	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab/images"
	"github.com/seine-cni/seine/test/lab/netns"
)

// ipfixCollector is go-ipfix's collecting process listening on TCP 4739 in
// the lab's external host, keeping every data record it decodes.
type ipfixCollector struct {
	cp   *collector.CollectingProcess
	done chan struct{}
	mu   sync.Mutex
	recs []map[string]any
}

func startIPFIXCollector(t *testing.T, c *Config) *ipfixCollector {
	t.Helper()
	registry.LoadRegistry() // the information elements it decodes (IANA, reverse, PEN 56506)
	cp, err := collector.InitCollectingProcess(collector.CollectorInput{Address: "0.0.0.0:4739", Protocol: "tcp",
		MaxBufferSize: 65535, DecodingMode: collector.DecodingModeStrict})
	if err != nil {
		t.Fatal(err)
	}
	x := &ipfixCollector{cp: cp, done: make(chan struct{})}
	// Start listens, then serves until Stop: all of it in the external
	// host's namespace (the socket is made there).
	go netns.Do(c.NetNSPath("ext"), func() error { cp.Start(); return nil })
	go func() {
		defer close(x.done)
		for m := range cp.GetMsgChan() {
			if set := m.GetSet(); set.GetSetType() == entities.Data {
				for _, r := range set.GetRecords() {
					f := r.GetElementMap()
					f["observationDomainId"] = m.GetObsDomainID()
					x.mu.Lock()
					x.recs = append(x.recs, f)
					x.mu.Unlock()
				}
			}
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if a := cp.GetAddress(); a != nil && !strings.HasSuffix(a.String(), ":0") {
			return x
		}
		if time.Now().After(deadline) {
			t.Fatal("the IPFIX collector did not start in the external host")
		}
	}
}

func (x *ipfixCollector) stop() {
	x.cp.Stop()
	<-x.done
}

// find waits up to timeout for a record match accepts.
func (x *ipfixCollector) find(timeout time.Duration, match func(map[string]any) bool) (map[string]any, bool) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		x.mu.Lock()
		for _, r := range x.recs {
			if match(r) {
				x.mu.Unlock()
				return r, true
			}
		}
		x.mu.Unlock()
		if time.Now().After(deadline) {
			return nil, false
		}
	}
}

// flowExport (issue 17) turns on the agents' flow export to a go-ipfix
// collector on the lab's external host (seine-config's flowExport, the
// agents restarted) and checks the records of real connections between
// real pods: pod -> pod on one node and across nodes (exported by both),
// pod -> external host, and a connection a Seine ClusterNetworkPolicy
// drops, each with its pods, namespaces, flow type and policy fields. The
// userspace datapath keeps no byte counts, so allowed connections carry
// none; the denied one counts the attempts the agent saw. Then the
// collector restarts: a connection made while it was away still arrives
// (the agent's bounded queue kept it; what an agent wrote in the second
// before it saw the collector gone is lost, see below).
func flowExport(t *testing.T, ctx context.Context, c *Config, idx *images.Index, pods []corev1.Pod) {
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	coll := startIPFIXCollector(t, c)
	stopped := false
	defer func() {
		if !stopped {
			coll.stop()
		}
	}()
	// An external service: the external host answers on 8081.
	var ln net.Listener
	if err := netns.Do(c.NetNSPath("ext"), func() (err error) { ln, err = net.Listen("tcp", ":8081"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte("ext\n"))
			conn.Close()
		}
	}()

	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "seine-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orig := cm.Data["seine-agent.yaml"]
	// The later subtests run without flow export: the agents read the
	// original again at their next start (the rolling upgrade's).
	defer func() {
		cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "seine-config", metav1.GetOptions{})
		if err == nil {
			cm.Data["seine-agent.yaml"] = orig
			_, err = cs.CoreV1().ConfigMaps("kube-system").Update(context.Background(), cm, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Errorf("seine-config not restored: %v", err)
		}
	}()
	cm.Data["seine-agent.yaml"] += fmt.Sprintf("flowExport:\n  collector: %s:4739\n  transport: tcp\n  pollInterval: 1s\n  activeTimeout: 5s\n  idleTimeout: 5s\n", c.ExternalIP())
	if _, err := cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"rollout", "restart", "-n", "kube-system", "ds/seine-agent"}, {"rollout", "status", "-n", "kube-system", "ds/seine-agent", "--timeout=3m"}} {
		if out, err := c.Kubectl(ctx, args...); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// A pod beside web's first, and a policy dropping web's TCP 8080 to it.
	fe := nameServer("fe", idx.Names.Seine, 1)
	fe.Spec.Template.Spec.NodeName = pods[0].Spec.NodeName
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, fe, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.AppsV1().Deployments("default").Delete(context.Background(), "fe", metav1.DeleteOptions{})
	fes, err := WaitDeploymentReady(ctx, cs, "default", "fe", 3*time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.realNodeLogs(ctx))
	}
	fePod := fes[0]
	f := t.TempDir() + "/rn-fe-deny.yaml"
	y := "apiVersion: crd.seine.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {name: rn-fe-deny}\n" +
		"spec: {tier: securityops, priority: 5, appliedTo: [{podSelector: {matchLabels: {app: fe}}}], ingress: [{name: no-web, action: Drop, " +
		"from: [{podSelector: {matchLabels: {app: web}}}], ports: [{protocol: TCP, port: 8080}]}]}\n"
	if err := os.WriteFile(f, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "create", "-f", f); err != nil {
		t.Fatalf("kubectl create -f (rn-fe-deny): %v %s", err, out)
	}
	defer c.Kubectl(context.Background(), "delete", "-f", f)
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
		out, err := c.Kubectl(ctx, "get", "networkpolicies.controlplane.seine.io",
			"-o", `jsonpath={range .items[?(@.sourceRef.name=="rn-fe-deny")]}{.status.phase}{end}`)
		if err == nil && out == "Realized" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rn-fe-deny not realized: %q %v", out, err)
		}
	}

	web0, web1 := pods[0], pods[1]
	nc := func(from corev1.Pod, to string, port int) (string, error) {
		return c.Kubectl(ctx, "exec", from.Name, "--", "nc", "-w", "3", to, fmt.Sprint(port))
	}
	if out, err := nc(fePod, web0.Status.PodIP, 8080); err != nil || out != web0.Name {
		t.Fatalf("fe -> web (same node): %q %v", out, err)
	}
	if out, err := nc(web0, web1.Status.PodIP, 8080); err != nil || out != web1.Name {
		t.Fatalf("web -> web (other node): %q %v", out, err)
	}
	if out, err := nc(web0, c.ExternalIP(), 8081); err != nil || out != "ext" {
		t.Fatalf("web -> external host: %q %v", out, err)
	}
	if out, err := nc(web1, fePod.Status.PodIP, 8080); err == nil {
		t.Fatalf("web -> fe tcp/8080 under rn-fe-deny: answered %q", out)
	}

	str := func(r map[string]any, k string) string { return fmt.Sprint(r[k]) }
	conn := func(src, dst string, port int) func(map[string]any) bool {
		return func(r map[string]any) bool {
			return str(r, "sourceIPv4Address") == src && str(r, "destinationIPv4Address") == dst && str(r, "destinationTransportPort") == fmt.Sprint(port)
		}
	}
	describe := func(r map[string]any) string {
		return fmt.Sprintf("src=%s/%s@%s dst=%s/%s@%s type=%s in=%s:%s/%s/%s:%s packets=%s bytes=%s",
			str(r, "sourcePodNamespace"), str(r, "sourcePodName"), str(r, "sourceNodeName"),
			str(r, "destinationPodNamespace"), str(r, "destinationPodName"), str(r, "destinationNodeName"), str(r, "flowType"),
			str(r, "ingressNetworkPolicyType"), str(r, "ingressNetworkPolicyNamespace"), str(r, "ingressNetworkPolicyName"),
			str(r, "ingressNetworkPolicyRuleName"), str(r, "ingressNetworkPolicyRuleAction"), str(r, "packetTotalCount"), str(r, "octetTotalCount"))
	}
	nodeA, nodeB := web0.Spec.NodeName, web1.Spec.NodeName
	for _, tc := range []struct {
		name       string
		match      func(map[string]any) bool
		want       string
		bothNodes  bool
		wantCounts bool
	}{
		{"same node", conn(fePod.Status.PodIP, web0.Status.PodIP, 8080),
			fmt.Sprintf("src=default/%s@%s dst=default/%s@%s type=1 in=0://:0 packets=0 bytes=0", fePod.Name, nodeA, web0.Name, nodeA), false, false},
		{"other node", conn(web0.Status.PodIP, web1.Status.PodIP, 8080),
			fmt.Sprintf("src=default/%s@%s dst=default/%s@%s type=2 in=0://:0 packets=0 bytes=0", web0.Name, nodeA, web1.Name, nodeB), true, false},
		{"external", conn(web0.Status.PodIP, c.ExternalIP(), 8081),
			fmt.Sprintf("src=default/%s@%s dst=/@ type=3 in=0://:0 packets=0 bytes=0", web0.Name, nodeA), false, false},
		{"denied", conn(web1.Status.PodIP, fePod.Status.PodIP, 8080),
			fmt.Sprintf("src=default/%s@%s dst=default/%s@%s type=2 in=3:/rn-fe-deny/no-web:2", web1.Name, nodeB, fePod.Name, nodeA), false, true},
	} {
		r, ok := coll.find(90*time.Second, tc.match)
		if !ok {
			t.Errorf("%s: no record in 90 s", tc.name)
			continue
		}
		got := describe(r)
		if tc.wantCounts {
			// Attempts the agent saw: at least the first SYN (60 bytes).
			if p, _ := r["packetTotalCount"].(uint64); p < 1 || r["octetTotalCount"].(uint64) < 60*p {
				t.Errorf("%s: counts %s", tc.name, got)
			}
			got = got[:strings.Index(got, " packets=")]
		}
		t.Logf("%s: %s (reason %s)", tc.name, got, str(r, "flowEndReason"))
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if tc.bothNodes {
			first := r["observationDomainId"]
			if _, ok := coll.find(30*time.Second, func(o map[string]any) bool { return tc.match(o) && o["observationDomainId"] != first }); !ok {
				t.Errorf("%s: exported by one node only", tc.name)
			}
		}
	}

	// The collector goes away; a connection made meanwhile arrives once a
	// collector listens again. IPFIX over TCP has no acknowledgements:
	// what an agent writes before it sees the collector's side closed
	// (every 100 ms, core/flowexport checkConnInterval; TestCollectorRestartLosesLittle)
	// is lost, so the connection is made once both agents have seen it (the
	// kubelets' probes keep them sending). Seen in a first version of this
	// test, when the agents looked every second: a connection made at once
	// was lost by both nodes.
	coll.stop()
	stopped = true
	time.Sleep(3 * time.Second)
	away := time.Now()
	if out, err := nc(web1, web0.Status.PodIP, 8080); err != nil || out != web0.Name {
		t.Fatalf("web -> web while the collector is away: %q %v", out, err)
	}
	time.Sleep(5 * time.Second) // polled, ended, queued
	coll = startIPFIXCollector(t, c)
	stopped = false
	r, ok := coll.find(90*time.Second, func(r map[string]any) bool {
		end, _ := r["flowEndSeconds"].(uint32)
		return conn(web1.Status.PodIP, web0.Status.PodIP, 8080)(r) && int64(end) >= away.Unix()
	})
	if !ok {
		coll.mu.Lock()
		var got []string
		for _, r := range coll.recs {
			got = append(got, fmt.Sprintf("%s:%s->%s:%s end=%v", str(r, "sourceIPv4Address"), str(r, "sourceTransportPort"),
				str(r, "destinationIPv4Address"), str(r, "destinationTransportPort"), r["flowEndSeconds"]))
		}
		coll.mu.Unlock()
		logs, _ := c.Kubectl(ctx, "logs", "-n", "kube-system", "ds/seine-agent", "-c", "seine-agent", "--tail", "400")
		var fl []string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "flow export") || strings.Contains(l, "flowexport") {
				fl = append(fl, l)
			}
		}
		t.Errorf("the connection %s -> %s:8080 made while the collector was away (from %d) never arrived (waited 90 s); the restarted collector got %d records:\n%s\nagent log:\n%s",
			web1.Status.PodIP, web0.Status.PodIP, away.Unix(), len(got), strings.Join(got, "\n"), strings.Join(fl, "\n"))
	} else {
		t.Logf("after the collector's restart (%s later): %s", time.Since(away).Round(time.Second), describe(r))
	}
}
