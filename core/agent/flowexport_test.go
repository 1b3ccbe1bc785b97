package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/core/agent/policy"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/flowexport"
	"github.com/seine-cni/seine/core/pipeline"
)

func TestFlowExportConfig(t *testing.T) {
	base := osPaths(labConfig)
	cfg, err := ParseConfig([]byte(base + "flowExport:\n  collector: ipfix.monitoring.svc:4739\n  transport: udp\n  activeTimeout: 60s\n  queueSize: 100\n"))
	if err != nil {
		t.Fatal(err)
	}
	fc, err := cfg.FlowExport.exporterConfig(cfg.NodeName, true)
	if err != nil || fc.Collector != "ipfix.monitoring.svc:4739" || fc.Transport != "udp" || fc.ActiveTimeout != time.Minute ||
		fc.QueueSize != 100 || fc.IdleTimeout != flowexport.DefaultIdleTimeout || fc.NodeName != "node-1" {
		t.Errorf("exporter config %+v, %v", fc, err)
	}
	if cfg, err := ParseConfig([]byte(base + "flowExport:\n  collector: c:4739\n")); err != nil || cfg.FlowExport.Transport != "" {
		t.Errorf("transport defaults to tcp: %v", err)
	} else if fc, _ := cfg.FlowExport.exporterConfig("n", false); fc.Transport != "tcp" {
		t.Errorf("transport %q", fc.Transport)
	}
	for _, tc := range []struct{ name, extra, want string }{
		{"no port", "  collector: ipfix\n", "want host:port"},
		{"transport", "  collector: c:1\n  transport: sctp\n", `transport "sctp"`},
		{"tls without CA", "  collector: c:1\n  transport: tls\n", "needs caFile"},
		{"CA without tls", "  collector: c:1\n  caFile: /ca.pem\n", "need transport tls"},
		{"active < poll", "  collector: c:1\n  pollInterval: 10s\n  activeTimeout: 1s\n", "must not be shorter"},
		{"unknown key", "  collector: c:1\n  sampling: 1\n", `unknown field "sampling"`},
	} {
		_, err := ParseConfig([]byte(base + "flowExport:\n" + tc.extra))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	// TLS files are read when the exporter starts; a missing one is named.
	dir := testDir(t) // Wine cannot remove a t.TempDir's files
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	fe := FlowExportConfig{Collector: "c:4740", Transport: "tls", CAFile: ca, ServerName: "collector"}
	if fc, err := fe.exporterConfig("n", true); err != nil || string(fc.TLS.CAData) != "PEM" || fc.TLS.ServerName != "collector" || fc.Transport != "tls" {
		t.Errorf("tls: %+v %v", fc.TLS, err)
	}
	fe.CAFile = filepath.Join(dir, "missing.pem")
	if _, err := fe.exporterConfig("n", true); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("missing CA file: %v", err)
	}
}

func TestFlowExportResolver(t *testing.T) {
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{podIPIndex: podIPs})
	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{clusterIPIndex: clusterIPs})
	pod := func(ns, name, node string, host bool, ips ...string) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "x"}, Annotations: map[string]string{"big": strings.Repeat("a", 1000)}},
			Spec:       corev1.PodSpec{NodeName: node, HostNetwork: host, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		o, err := slimPod(p)
		if err != nil {
			t.Fatal(err)
		}
		if s := o.(*corev1.Pod); s.Labels != nil || s.Annotations != nil || s.Spec.Containers != nil || s.Spec.NodeName != node {
			t.Errorf("slimPod kept %+v", s)
		}
		if err := pods.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	pod("web", "server-0", "node-2", false, "10.244.2.7", "fd00:10:244:2::7")
	pod("kube-system", "agent", "node-2", true, "192.168.10.2")
	if err := svcs.Add(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "frontend"},
		Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
	}); err != nil {
		t.Fatal(err)
	}
	rules := map[uint32]policy.RuleName{
		7: {Kind: cp.K8sNetworkPolicy, Namespace: "web", Name: "allow-client", Rule: "ingress/0", Direction: pipeline.PolicyIngress, Action: pipeline.ActionAllow},
		8: {Kind: cp.SeineNetworkPolicy, Namespace: "web", Name: "guard", Rule: "to-db", Direction: pipeline.PolicyEgress, Action: pipeline.ActionAllow},
		9: {Kind: cp.UpstreamClusterNetworkPolicy, Name: "baseline", Rule: "dns", Direction: pipeline.PolicyEgress, Action: pipeline.ActionAllow},
	}
	r := kubeResolver{pods: pods, svcs: svcs, rules: func() map[uint32]policy.RuleName { return rules }}
	for id, want := range map[uint32]flowexport.Policy{
		7: {Type: 1, Namespace: "web", Name: "allow-client", Rule: "ingress/0", Action: 1},
		8: {Type: 2, Namespace: "web", Name: "guard", Rule: "to-db", Action: 1},
		9: {Type: 3, Name: "baseline", Rule: "dns", Action: 1},
	} {
		if got, ok := r.Rule(id); !ok || got != want {
			t.Errorf("Rule(%d) = %+v %v, want %+v", id, got, ok, want)
		}
	}
	if got, ok := r.Rule(10); ok {
		t.Errorf("Rule(10), no such rule: %+v", got)
	}
	for ip, want := range map[string]flowexport.Pod{
		"10.244.2.7":       {Namespace: "web", Name: "server-0", Node: "node-2"},
		"fd00:10:244:2::7": {Namespace: "web", Name: "server-0", Node: "node-2"},
	} {
		if got, ok := r.Pod(netip.MustParseAddr(ip)); !ok || got != want {
			t.Errorf("Pod(%s) = %+v %v", ip, got, ok)
		}
	}
	if got, ok := r.Pod(netip.MustParseAddr("192.168.10.2")); ok {
		t.Errorf("a host-network pod's address (its node's) named %+v", got)
	}
	if got, ok := r.Service(flowexport.ProtoTCP, netip.MustParseAddr("10.96.0.10"), 80); !ok || got != (flowexport.Service{Namespace: "web", Name: "frontend", Port: "http"}) {
		t.Errorf("Service tcp/80 = %+v %v", got, ok)
	}
	if got, ok := r.Service(flowexport.ProtoUDP, netip.MustParseAddr("10.96.0.10"), 53); !ok || got.Port != "dns" {
		t.Errorf("Service udp/53 = %+v %v", got, ok)
	}
	if _, ok := r.Service(flowexport.ProtoUDP, netip.MustParseAddr("10.96.0.10"), 80); ok {
		t.Error("udp/80 is not a port of the Service")
	}
}
