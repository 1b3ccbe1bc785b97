package manifest

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/admission"
	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/installer/kubernetes/apiext"
)

const checkedIn = "../seine.yml"

func TestCheckedInManifestIsGenerated(t *testing.T) {
	want, err := YAML(Options{})
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(checkedIn)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s differs from the generator's output: run `go generate ./installer/kubernetes/manifest` and commit the result", checkedIn)
	}
}

var clusterScoped = map[string]bool{
	"APIService": true, "CustomResourceDefinition": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true, "ValidatingWebhookConfiguration": true,
}

// documents splits the rendered manifest into its YAML documents, keyed by
// kind/name.
func documents(t *testing.T) map[string][]byte {
	t.Helper()
	b, err := YAML(Options{})
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]byte{}
	for i, d := range strings.Split(string(b), "\n---\n")[1:] {
		var h struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(d), &h); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		key := h.Kind + "/" + h.Metadata.Name
		if _, dup := docs[key]; dup {
			t.Errorf("%s appears twice", key)
		}
		if !clusterScoped[h.Kind] && !strings.HasPrefix(h.Kind, "Cluster") && h.Metadata.Namespace != Namespace {
			t.Errorf("%s: namespace %q, want %s", key, h.Metadata.Namespace, Namespace)
		}
		docs[key] = []byte(d)
	}
	return docs
}

func decode[T any](t *testing.T, docs map[string][]byte, key string) *T {
	t.Helper()
	d, ok := docs[key]
	if !ok {
		t.Fatalf("no %s in the manifest (have %v)", key, keys(docs))
	}
	var v T
	if err := yaml.UnmarshalStrict(d, &v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return &v
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestManifestHasEveryObject(t *testing.T) {
	want := []string{
		"APIService/v1alpha1.stats.seine.io", "APIService/v1beta1.controlplane.seine.io",
		"ClusterRole/seine-agent", "ClusterRole/seine-controller", "ClusterRole/seine-controlplane-viewer", "ClusterRole/seine-metrics-reader",
		"ClusterRole/seine-supportbundle",
		"ClusterRoleBinding/seine-agent", "ClusterRoleBinding/seine-agent-auth-delegator", "ClusterRoleBinding/seine-controller", "ClusterRoleBinding/seine-controller-auth-delegator",
		"ClusterRoleBinding/seine-supportbundle",
		"ConfigMap/seine-config",
		"CustomResourceDefinition/clustergroups.crd.seine.io",
		"CustomResourceDefinition/clusternetworkpolicies.crd.seine.io", "CustomResourceDefinition/networkpolicies.crd.seine.io",
		"CustomResourceDefinition/seineagentinfos.crd.seine.io", "CustomResourceDefinition/seinecontrollerinfos.crd.seine.io",
		"CustomResourceDefinition/tiers.crd.seine.io",
		"CustomResourceDefinition/traceflows.crd.seine.io",
		"DaemonSet/seine-agent", "DaemonSet/seine-ovs", "Deployment/seine-controller",
		"Role/seine-supportbundle-token", "RoleBinding/seine-controller-authentication-reader",
		"Service/seine-controller", "ServiceAccount/seine-agent", "ServiceAccount/seine-controller", "ServiceAccount/seine-supportbundle",
		"ValidatingAdmissionPolicy/seine-agent-info-own-node",
		"ValidatingAdmissionPolicy/seine-clustergroups-children", "ValidatingAdmissionPolicy/seine-clustergroups-in-use",
		"ValidatingAdmissionPolicy/seine-tier-priorities", "ValidatingAdmissionPolicy/seine-tiers", "ValidatingAdmissionPolicy/seine-tiers-in-use",
		"ValidatingAdmissionPolicyBinding/seine-agent-info-own-node",
		"ValidatingAdmissionPolicyBinding/seine-clustergroups-children", "ValidatingAdmissionPolicyBinding/seine-clustergroups-in-use",
		"ValidatingAdmissionPolicyBinding/seine-tier-priorities", "ValidatingAdmissionPolicyBinding/seine-tiers", "ValidatingAdmissionPolicyBinding/seine-tiers-in-use",
		"ValidatingWebhookConfiguration/seine-validation",
	}
	if got := keys(documents(t)); !slices.Equal(got, want) {
		t.Errorf("objects:\n got %v\nwant %v", got, want)
	}
}

// The ConfigMap's template is a valid agent configuration once node-prep
// has set the node name, and every path in it is mounted in the agent.
func TestAgentConfigFitsTheDaemonSet(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the DaemonSet's agent configuration holds Linux paths, which core/agent checks with the running OS's rules")
	}
	docs := documents(t)
	cm := decode[corev1.ConfigMap](t, docs, "ConfigMap/seine-config")
	tmpl := cm.Data[agentConfigKey]
	if _, err := agent.ParseConfig([]byte(tmpl)); err == nil || !strings.Contains(err.Error(), "nodeName is required") {
		t.Errorf("the template without a node name: got %v, want only nodeName missing", err)
	}
	cfg, err := agent.ParseConfig([]byte(strings.Replace(tmpl, `nodeName: ""`, "nodeName: node-1", 1)))
	if err != nil {
		t.Fatalf("template with a node name: %v", err)
	}
	ds := decode[appsv1.DaemonSet](t, docs, "DaemonSet/seine-agent")
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("want one init container and one container, got %d and %d", len(spec.InitContainers), len(spec.Containers))
	}
	ag, prep := spec.Containers[0], spec.InitContainers[0]
	mounted := func(c corev1.Container, path string) bool {
		return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")
		})
	}
	// containerCNIBin: `seinectl check` run in the agent's container finds the plugin.
	for _, p := range []string{cfg.OVS.RunDir, filepath.Dir(cfg.CNISocket), cfg.CNIConfDir, cfg.StateDir, renderedConfig, containerCNIBin} {
		if !mounted(ag, p) {
			t.Errorf("agent container: %s is not on a mounted volume", p)
		}
	}
	// seine-cni runs on the host and dials the socket path the agent
	// writes into the conflist: that directory must be the same path on
	// both sides.
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, m := range ag.VolumeMounts {
		if m.MountPath == filepath.Dir(cfg.CNISocket) && hostPaths[m.Name] != m.MountPath {
			t.Errorf("cni socket directory %s is host path %q", m.MountPath, hostPaths[m.Name])
		}
	}
	for _, p := range []string{renderedConfig, containerCNIBin, templateDir} {
		if !mounted(prep, p) {
			t.Errorf("node-prep container: %s is not on a mounted volume", p)
		}
	}
	if !slices.Equal(prep.Command, NodePrepArgs) {
		t.Errorf("node-prep command %v", prep.Command)
	}
	if !slices.Contains(ag.Command, "--config="+renderedConfig) {
		t.Errorf("agent command %v does not read %s", ag.Command, renderedConfig)
	}
	health := netip.MustParseAddrPort(cfg.HealthAddress)
	for name, p := range map[string]*corev1.Probe{"readiness": ag.ReadinessProbe, "liveness": ag.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != int(health.Port()) || p.HTTPGet.Host != health.Addr().String() {
			t.Errorf("%s probe %+v does not ask %s", name, p, cfg.HealthAddress)
		}
	}
	if !spec.HostNetwork || spec.NodeSelector[corev1.LabelOSStable] != "linux" {
		t.Errorf("hostNetwork %v, nodeSelector %v", spec.HostNetwork, spec.NodeSelector)
	}
	if ag.SecurityContext == nil || ag.SecurityContext.Privileged == nil || !*ag.SecurityContext.Privileged {
		t.Error("the agent is not privileged")
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("tolerations %v: the agent must run on every node", spec.Tolerations)
	}
}

func TestControllerServesTheAPIServices(t *testing.T) {
	for _, gv := range []string{"v1beta1.controlplane.seine.io", "v1alpha1.stats.seine.io"} {
		t.Run(gv, func(t *testing.T) { controllerServes(t, gv) })
	}
}

func controllerServes(t *testing.T, name string) {
	docs := documents(t)
	apisvc := decode[APIService](t, docs, "APIService/"+name)
	group, version := name[strings.IndexByte(name, '.')+1:], name[:strings.IndexByte(name, '.')]
	svc := decode[corev1.Service](t, docs, "Service/"+apisvc.Spec.Service.Name)
	dep := decode[appsv1.Deployment](t, docs, "Deployment/seine-controller")
	if apisvc.Spec.Group != group || apisvc.Spec.Version != version || apisvc.Spec.Service.Namespace != Namespace {
		t.Errorf("APIService spec %+v", apisvc.Spec)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != *apisvc.Spec.Service.Port {
		t.Fatalf("service ports %+v, APIService port %d", svc.Spec.Ports, *apisvc.Spec.Service.Port)
	}
	labels := dep.Spec.Template.Labels
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Errorf("service selector %v does not select the controller's pods %v", svc.Spec.Selector, labels)
		}
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 1 || c.Ports[0].Name != svc.Spec.Ports[0].TargetPort.String() ||
		!slices.Contains(c.Args, "--secure-port="+strconv.Itoa(int(c.Ports[0].ContainerPort))) {
		t.Errorf("controller ports %+v args %v, service target %s", c.Ports, c.Args, svc.Spec.Ports[0].TargetPort.String())
	}
	// TLS to the controller is verified: the APIService carries no CA of
	// its own and does not skip verification; the controller signs its
	// certificate for the Service's name and may set the caBundle of
	// exactly this APIService.
	if apisvc.Spec.InsecureSkipTLSVerify || len(apisvc.Spec.CABundle) != 0 {
		t.Errorf("APIService insecureSkipTLSVerify %v caBundle %q", apisvc.Spec.InsecureSkipTLSVerify, apisvc.Spec.CABundle)
	}
	for _, want := range []string{"--service=" + svc.Namespace + "/" + svc.Name, "--apiservice=" + apisvc.Name} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("controller args %v lack %s", c.Args, want)
		}
	}
	role := decode[rbacv1.ClusterRole](t, docs, "ClusterRole/seine-controller")
	if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.APIGroups, []string{"apiregistration.k8s.io"}) && slices.Equal(r.Resources, []string{"apiservices"}) &&
			slices.Contains(r.ResourceNames, apisvc.Name) && slices.Contains(r.Verbs, "get") && slices.Contains(r.Verbs, "patch")
	}) {
		t.Errorf("the controller may not get and patch APIService %s: %+v", apisvc.Name, role.Rules)
	}
}

// The admission webhook of crd.seine.io calls the controller through the
// Service the APIService uses, at the path the controller serves it, with
// no CA of its own (the controller, told its name, keeps it set and may
// update exactly that object); it fails closed, has no side effects, a
// small timeout, and matches creates and updates of the policies and
// groups, and deletes of tiers (not status, not other deletes).
func TestControllerServesTheAdmissionWebhook(t *testing.T) {
	docs := documents(t)
	vwc := decode[admissionregv1.ValidatingWebhookConfiguration](t, docs, "ValidatingWebhookConfiguration/"+apiext.WebhookConfigurationName)
	apisvc := decode[APIService](t, docs, "APIService/v1beta1.controlplane.seine.io")
	dep := decode[appsv1.Deployment](t, docs, "Deployment/seine-controller")
	if len(vwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(vwc.Webhooks))
	}
	w := vwc.Webhooks[0]
	svc := w.ClientConfig.Service
	if svc == nil || svc.Namespace != apisvc.Spec.Service.Namespace || svc.Name != apisvc.Spec.Service.Name || *svc.Port != *apisvc.Spec.Service.Port ||
		svc.Path == nil || *svc.Path != admission.Path || len(w.ClientConfig.CABundle) != 0 || w.ClientConfig.URL != nil {
		t.Errorf("clientConfig %+v (service %+v), want the controller's Service at %s without a caBundle", w.ClientConfig, svc, admission.Path)
	}
	if *w.FailurePolicy != admissionregv1.Fail || *w.SideEffects != admissionregv1.SideEffectClassNone || *w.TimeoutSeconds > 5 ||
		!slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("failurePolicy %s sideEffects %s timeoutSeconds %d reviews %v", *w.FailurePolicy, *w.SideEffects, *w.TimeoutSeconds, w.AdmissionReviewVersions)
	}
	if len(w.Rules) != 2 || !slices.Equal(w.Rules[0].Operations, []admissionregv1.OperationType{admissionregv1.Create, admissionregv1.Update}) ||
		!slices.Equal(w.Rules[0].APIGroups, []string{"crd.seine.io"}) ||
		!slices.Equal(w.Rules[0].Resources, []string{"clusternetworkpolicies", "networkpolicies", "clustergroups"}) ||
		!slices.Equal(w.Rules[1].Operations, []admissionregv1.OperationType{admissionregv1.Delete}) || !slices.Equal(w.Rules[1].Resources, []string{"tiers"}) {
		t.Errorf("rules %+v", w.Rules)
	}
	if c := dep.Spec.Template.Spec.Containers[0]; !slices.Contains(c.Args, "--validating-webhook-configuration="+vwc.Name) {
		t.Errorf("controller args %v lack --validating-webhook-configuration=%s", c.Args, vwc.Name)
	}
	role := decode[rbacv1.ClusterRole](t, docs, "ClusterRole/seine-controller")
	if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.APIGroups, []string{"admissionregistration.k8s.io"}) && slices.Equal(r.Resources, []string{"validatingwebhookconfigurations"}) &&
			slices.Equal(r.ResourceNames, []string{vwc.Name}) && slices.Contains(r.Verbs, "get") && slices.Contains(r.Verbs, "update")
	}) {
		t.Errorf("the controller may not get and update ValidatingWebhookConfiguration %s: %+v", vwc.Name, role.Rules)
	}
}

func TestImageOption(t *testing.T) {
	b, err := YAML(Options{Image: "registry.example/seine:v1.2.3", OVSImage: "registry.example/seine-ovs:3.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "image: registry.example/seine:v1.2.3"); n != 3 {
		t.Errorf("the image appears %d times, want 3 (controller, node-prep, agent)", n)
	}
	if n := strings.Count(string(b), "image: registry.example/seine-ovs:3.1.0"); n != 1 {
		t.Errorf("the OVS image appears %d times, want 1 (seine-ovs)", n)
	}
	if strings.Contains(string(b), DefaultImage) || strings.Contains(string(b), DefaultOVSImage) {
		t.Error("a default image is still there")
	}
}

// TestOpenVSwitchHasADaemonSetOfItsOwn: seine-ovs runs start-ovs from its
// own image (not Seine's: a new Seine must not restart the switch), on
// every Linux node, privileged on the host network, with the database,
// sockets and logs on host paths; the sockets' directory is the agent's
// ovs.runDir and the same host path in both DaemonSets. /lib/modules is
// mounted only here and tolerates its absence (userspace datapath).
func TestOpenVSwitchHasADaemonSetOfItsOwn(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the DaemonSet's agent configuration holds Linux paths, which core/agent checks with the running OS's rules")
	}
	docs := documents(t)
	ovs := decode[appsv1.DaemonSet](t, docs, "DaemonSet/seine-ovs")
	ag := decode[appsv1.DaemonSet](t, docs, "DaemonSet/seine-agent")
	spec := ovs.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("seine-ovs: %d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != DefaultOVSImage || c.Image == ag.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("seine-ovs image %q, agent image %q: want the OVS image, not Seine's", c.Image, ag.Spec.Template.Spec.Containers[0].Image)
	}
	if !slices.Equal(c.Command, []string{StartOVSCommand}) {
		t.Errorf("seine-ovs command %v", c.Command)
	}
	if !spec.HostNetwork || spec.NodeSelector[corev1.LabelOSStable] != "linux" || c.SecurityContext == nil || !*c.SecurityContext.Privileged {
		t.Errorf("seine-ovs: hostNetwork %v, nodeSelector %v, privileged %v", spec.HostNetwork, spec.NodeSelector, c.SecurityContext)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.Exec == nil || c.ReadinessProbe == nil {
		t.Errorf("seine-ovs probes: liveness %+v readiness %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	hostPath := func(ds *appsv1.DaemonSet, mountPath string) *corev1.HostPathVolumeSource {
		t.Helper()
		s := ds.Spec.Template.Spec
		for _, ctr := range s.Containers {
			for _, m := range ctr.VolumeMounts {
				if m.MountPath != mountPath {
					continue
				}
				for _, v := range s.Volumes {
					if v.Name == m.Name && v.HostPath != nil {
						return v.HostPath
					}
				}
			}
		}
		return nil
	}
	cfg, err := agent.ParseConfig([]byte(strings.Replace(AgentConfigTemplate, `nodeName: ""`, "nodeName: node-1", 1)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cfg.OVS.RunDir, hostOVSDBDir, hostOVSLogDir, "/lib/modules"} {
		hp := hostPath(ovs, p)
		if hp == nil || hp.Path != p || *hp.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("seine-ovs: %s is %+v, want host path %s, DirectoryOrCreate", p, hp, p)
		}
	}
	if hp := hostPath(ag, cfg.OVS.RunDir); hp == nil || hp.Path != cfg.OVS.RunDir {
		t.Errorf("agent: ovs.runDir %s is %+v, want the host path seine-ovs shares", cfg.OVS.RunDir, hp)
	}
	// node-prep checks the run directory: without it mounted the check
	// fails on every node (seen on the lab's real nodes).
	var prepMounts bool
	for _, m := range ag.Spec.Template.Spec.InitContainers[0].VolumeMounts {
		prepMounts = prepMounts || m.MountPath == cfg.OVS.RunDir
	}
	if !prepMounts {
		t.Errorf("node-prep does not mount ovs.runDir %s, which it checks", cfg.OVS.RunDir)
	}
	if hp := hostPath(ag, "/lib/modules"); hp != nil {
		t.Errorf("agent mounts /lib/modules (%+v): only Open vSwitch loads modules", hp)
	}
}
