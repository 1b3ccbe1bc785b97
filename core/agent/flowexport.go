package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/core/agent/policy"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/flowexport"
	"github.com/seine-cni/seine/core/pipeline"
)

// FlowExportConfig turns on IPFIX flow export (core/flowexport/README.md).
// An empty Collector leaves it off.
type FlowExportConfig struct {
	// Collector is host:port of the IPFIX collector.
	Collector string `json:"collector,omitempty"`
	// Transport is tcp (default), udp or tls.
	Transport       string          `json:"transport,omitempty"`
	PollInterval    metav1.Duration `json:"pollInterval,omitempty"`
	ActiveTimeout   metav1.Duration `json:"activeTimeout,omitempty"`
	IdleTimeout     metav1.Duration `json:"idleTimeout,omitempty"`
	TemplateRefresh metav1.Duration `json:"templateRefresh,omitempty"`
	MaxConnections  int             `json:"maxConnections,omitempty"`
	QueueSize       int             `json:"queueSize,omitempty"`
	// TLS (transport tls): the collector's CA, an optional client
	// certificate and key, and the name the collector's certificate has.
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
	ServerName string `json:"serverName,omitempty"`
}

// exporterConfig is c as core/flowexport takes it; with readFiles it also
// reads the TLS files (Validate checks the rest without touching them).
func (c *FlowExportConfig) exporterConfig(node string, readFiles bool) (flowexport.Config, error) {
	fc := flowexport.Config{
		NodeName: node, Collector: c.Collector, Transport: c.Transport,
		PollInterval: c.PollInterval.Duration, ActiveTimeout: c.ActiveTimeout.Duration,
		IdleTimeout: c.IdleTimeout.Duration, TemplateRefresh: c.TemplateRefresh.Duration,
		MaxConnections: c.MaxConnections, QueueSize: c.QueueSize,
	}
	if fc.Transport == "" {
		fc.Transport = "tcp"
	}
	if fc.Transport != "tls" {
		if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
			return fc, fmt.Errorf("flowExport: caFile, certFile and keyFile need transport tls")
		}
		return fc, fc.Check()
	}
	if c.CAFile == "" {
		return fc, errors.New("flowExport: transport tls needs caFile")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fc, errors.New("flowExport: certFile and keyFile go together")
	}
	fc.TLS = &flowexport.TLS{ServerName: c.ServerName, CAData: []byte("unread")}
	if readFiles {
		var err error
		read := func(path string) []byte {
			if path == "" || err != nil {
				return nil
			}
			var b []byte
			if b, err = os.ReadFile(path); err != nil {
				err = fmt.Errorf("flowExport: %w", err)
			}
			return b
		}
		fc.TLS.CAData, fc.TLS.CertData, fc.TLS.KeyData = read(c.CAFile), read(c.CertFile), read(c.KeyFile)
		if err != nil {
			return fc, err
		}
	}
	return fc, fc.Check()
}

// Indexes the flow exporter's resolver looks addresses up by.
const (
	podIPIndex     = "seine.io/pod-ip"
	clusterIPIndex = "seine.io/cluster-ip"
)

// setupFlowExport registers what the exporter reads (every pod, slimmed to
// what a record names; the Services the proxy also watches) before the
// informers start.
func (a *Agent) setupFlowExport() error {
	fe := a.cfg.FlowExport
	if fe == nil || fe.Collector == "" {
		return nil
	}
	pods := a.factory.Core().V1().Pods().Informer()
	if err := pods.SetTransform(slimPod); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	if err := pods.AddIndexers(cache.Indexers{podIPIndex: podIPs}); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	svcs := a.factory.Core().V1().Services().Informer()
	if err := svcs.AddIndexers(cache.Indexers{clusterIPIndex: clusterIPs}); err != nil {
		return fmt.Errorf("service informer: %w", err)
	}
	a.flowExportSynced = []cache.InformerSynced{pods.HasSynced, svcs.HasSynced}
	// The policy controller is made after this: read it when asked.
	rules := func() map[uint32]policy.RuleName { return a.policy.AllowRules() }
	a.flowResolver = kubeResolver{pods: pods.GetIndexer(), svcs: svcs.GetIndexer(), rules: rules}
	return nil
}

// runFlowExport exports until ctx ends; nil when flow export is off.
func (a *Agent) runFlowExport(ctx context.Context) error {
	fe := a.cfg.FlowExport
	if fe == nil || fe.Collector == "" {
		return nil
	}
	cfg, err := fe.exporterConfig(a.cfg.NodeName, true)
	if err != nil {
		return err
	}
	c, err := a.vswitchd(ctx)
	if err != nil {
		return fmt.Errorf("flow export: %w", err)
	}
	defer c.Close()
	src := flowexport.ConntrackSource{Appctl: c, Datapath: datapathName(a.cfg.OVS.DatapathType), Zone: pipeline.CtZone}
	x, err := flowexport.New(cfg, src, a.flowResolver, a.log.With("component", "flowexport"))
	if err != nil {
		return err
	}
	if !cache.WaitForCacheSync(ctx.Done(), a.flowExportSynced...) {
		return nil
	}
	a.flowExporter.Store(x)
	a.log.Info("flow export started", "collector", cfg.Collector, "transport", cfg.Transport)
	return x.Run(ctx)
}

// datapathName is the name ovs-vswitchd gives the datapath of a bridge of
// datapath type t; "" lets OVS pick.
func datapathName(t string) string {
	switch t {
	case "netdev":
		return "netdev@ovs-netdev"
	case "system":
		return "system@ovs-system"
	}
	return ""
}

// slimPod keeps what a flow record names of a pod.
func slimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion},
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{PodIPs: p.Status.PodIPs},
	}, nil
}

// podIPs indexes pods by their addresses; host-network pods share their
// node's and name nothing.
func podIPs(o any) ([]string, error) {
	p, ok := o.(*corev1.Pod)
	if !ok || p.Spec.HostNetwork {
		return nil, nil
	}
	var out []string
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.String())
		}
	}
	return out, nil
}

// clusterIPs indexes Services by their cluster IPs.
func clusterIPs(o any) ([]string, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, ip := range s.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.String())
		}
	}
	return out, nil
}

// kubeResolver names connection ends from the informers' caches, and the
// rules in their ct_label from the installed policy.
type kubeResolver struct {
	pods, svcs cache.Indexer
	rules      func() map[uint32]policy.RuleName
}

// Rule names the allow rule with this ID (from ct_label) as go-ipfix's
// registry does: Kubernetes NetworkPolicy type 1, a namespaced Seine
// NetworkPolicy 2, the cluster-wide kinds 3 (Antrea's
// ClusterNetworkPolicy number: go-ipfix v0.17 has no other for a cluster
// policy).
func (r kubeResolver) Rule(id uint32) (flowexport.Policy, bool) {
	if r.rules == nil {
		return flowexport.Policy{}, false
	}
	n, ok := r.rules()[id]
	if !ok {
		return flowexport.Policy{}, false
	}
	return exportedPolicy(n), true
}

// exportedPolicy is n as a flow record says it.
func exportedPolicy(n policy.RuleName) flowexport.Policy {
	p := flowexport.Policy{Namespace: n.Namespace, Name: n.Name, Rule: n.Rule}
	switch n.Kind {
	case cp.K8sNetworkPolicy:
		p.Type = flowexport.PolicyK8s
	case cp.SeineNetworkPolicy:
		p.Type = flowexport.PolicyNamespaced
	case cp.SeineClusterNetworkPolicy, cp.UpstreamClusterNetworkPolicy:
		p.Type = flowexport.PolicyCluster
	}
	p.Action = exportedAction(n.Action)
	return p
}

// exportedAction is a rule's action as go-ipfix's registry numbers it (0:
// none, for Pass).
func exportedAction(a pipeline.PolicyAction) uint8 {
	switch a {
	case pipeline.ActionAllow:
		return flowexport.ActionAllow
	case pipeline.ActionDrop:
		return flowexport.ActionDrop
	case pipeline.ActionReject:
		return flowexport.ActionReject
	}
	return 0
}

func (r kubeResolver) Pod(ip netip.Addr) (flowexport.Pod, bool) {
	objs, err := r.pods.ByIndex(podIPIndex, ip.String())
	if err != nil {
		return flowexport.Pod{}, false
	}
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			return flowexport.Pod{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName}, true
		}
	}
	return flowexport.Pod{}, false
}

func (r kubeResolver) Service(proto uint8, ip netip.Addr, port uint16) (flowexport.Service, bool) {
	objs, err := r.svcs.ByIndex(clusterIPIndex, ip.String())
	if err != nil {
		return flowexport.Service{}, false
	}
	want := map[uint8]corev1.Protocol{flowexport.ProtoTCP: corev1.ProtocolTCP, flowexport.ProtoUDP: corev1.ProtocolUDP, flowexport.ProtoSCTP: corev1.ProtocolSCTP}[proto]
	for _, o := range objs {
		s, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		for _, p := range s.Spec.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if pp == want && p.Port == int32(port) {
				return flowexport.Service{Namespace: s.Namespace, Name: s.Name, Port: p.Name}, true
			}
		}
	}
	return flowexport.Service{}, false
}
