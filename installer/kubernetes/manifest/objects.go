package manifest

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/seine-cni/seine/installer/kubernetes/apiext"
)

// AgentConfigTemplate is the agent configuration the ConfigMap carries. Its
// nodeName is empty: seinectl node-prep fills it in on each node (from the
// downward API) and writes the result where seine-agent reads it. The keys
// are core/agent.Config's.
const AgentConfigTemplate = `# seine-agent configuration (core/agent.Config); nodeName is set per node by seinectl node-prep.
nodeName: ""
# Empty: the in-cluster service account.
kubeconfig: ""
ovs:
  dbEndpoint: unix:` + hostOVSRunDir + `/db.sock
  runDir: ` + hostOVSRunDir + `
  bridge: br-int
  datapathType: system
topology: routedHost
# Empty: the interface holding the node IP.
uplink: ""
trafficMode: encap
tunnelType: geneve
# 0: the uplink MTU minus the encap overhead.
mtu: 0
cniSocket: ` + hostRunDir + `/cni.sock
cniConfDir: ` + containerCNIConf + `
stateDir: ` + hostStateDir + `
healthAddress: 127.0.0.1:10350
# /metrics over HTTPS for clients the kube-apiserver authorizes to get it
# (bind a scraper to the seine-metrics-reader ClusterRole); "" turns it off.
metricsAddress: 0.0.0.0:10351
# The policy audit log (rules with enableLogging), rotated by size; empty:
# /var/log/seine/networkpolicy/np.log.
policyAuditLogFile: ""
# Without kube-proxy, the API server's own address: the in-cluster one is
# the kubernetes Service's cluster IP, which Seine serves once it runs.
# kubeAPIServer: https://<control plane>:6443
proxy:
  # seine: Services in OVS (no kube-proxy needed); kubeProxy: a kube-proxy
  # on every node handles them.
  mode: seine
  # Empty: the cluster's ServiceCIDR objects.
  serviceCIDRs: []
`

// Objects returns the manifest's objects in the order kubectl should create
// them: the CustomResourceDefinitions, identities and RBAC, configuration,
// the controller and its Service, the agent DaemonSet, the APIService, the
// admission webhook of crd.seine.io (its caBundle, like the APIService's,
// is the controller's to set).
func Objects(o Options) []any {
	objs := append(apiExtensions(), []any{
		serviceAccount(agentName),
		serviceAccount(controllerName),
		agentClusterRole(),
		clusterRoleBinding(agentName, agentName, agentName),
		controllerClusterRole(),
		clusterRoleBinding(controllerName, controllerName, controllerName),
		// seine-controller delegates authentication and authorization of
		// controlplane.seine.io requests to the kube-apiserver.
		clusterRoleBinding(controllerName+"-auth-delegator", "system:auth-delegator", controllerName),
		// seine-agent delegates those of its /metrics scrapes.
		clusterRoleBinding(agentName+"-auth-delegator", "system:auth-delegator", agentName),
		metricsReaderClusterRole(),
		// seinectl supportbundle collects as this ServiceAccount (a
		// short-lived token): get on /supportbundle of every agent and of
		// the controller, nothing else.
		serviceAccount(SupportBundleName),
		supportBundleClusterRole(),
		clusterRoleBinding(SupportBundleName, SupportBundleName, SupportBundleName),
		supportBundleTokenRole(),
		authReaderBinding(),
		viewerClusterRole(),
		configMap(),
		controllerService(),
		controllerDeployment(o),
		ovsDaemonSet(o),
		agentDaemonSet(o),
		apiService(controlplaneAPIServiceName, controlplaneGroup, "v1beta1"),
		apiService(statsAPIServiceName, statsGroup, "v1alpha1"),
		apiext.AdmissionWebhook(Namespace, controllerName, nil),
	}...)
	return objs
}

func meta(name string, namespaced bool, component string) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "seine"}}
	if component != "" {
		m.Labels["component"] = component
	}
	if namespaced {
		m.Namespace = Namespace
	}
	return m
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func serviceAccount(name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name, true, name)}
}

var readOnly = []string{"get", "list", "watch"}

// The names of seine.yml's ClusterRoles that other identities are bound to.
const (
	AgentClusterRole         = agentName
	ControllerClusterRole    = controllerName
	MetricsReaderClusterRole = "seine-metrics-reader"
	// SupportBundleName names the ServiceAccount `seinectl supportbundle`
	// collects as, its ClusterRole (get on /supportbundle) and binding,
	// and the Role that lets a user request its token.
	SupportBundleName = "seine-supportbundle"
)

// ClusterRoles are seine.yml's ClusterRoles: the agent's, the
// controller's, the metrics reader and the viewer the built-in view, edit
// and admin roles aggregate. The lab binds its own identities to the same
// roles, so a rule added here reaches the lab's agents and controller.
func ClusterRoles() []*rbacv1.ClusterRole {
	return []*rbacv1.ClusterRole{agentClusterRole(), controllerClusterRole(), metricsReaderClusterRole(), supportBundleClusterRole(), viewerClusterRole()}
}

func agentClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: meta(agentName, false, agentName),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes", "pods", "namespaces", "services"}, Verbs: readOnly},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: readOnly},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies", "servicecidrs"}, Verbs: readOnly},
			{APIGroups: []string{controlplaneGroup}, Resources: []string{"addressgroups", "appliedtogroups", "networkpolicies"}, Verbs: readOnly},
			// The agent reports the policies it realized (a create replaces
			// its previous report).
			{APIGroups: []string{controlplaneGroup}, Resources: []string{"nodepolicystatuses", "nodepolicystatsreports"}, Verbs: []string{"create"}},
			// Traceflow: each agent installs running traces' flows and
			// writes its node's results into the status (server-side apply).
			{APIGroups: []string{crdGroup}, Resources: []string{"traceflows"}, Verbs: readOnly},
			{APIGroups: []string{crdGroup}, Resources: []string{"traceflows/status"}, Verbs: []string{"patch"}},
			// Inventory: the agent writes its node's SeineAgentInfo status
			// (seine-agent-info-own-node keeps it to its own node).
			{APIGroups: []string{crdGroup}, Resources: []string{"seineagentinfos", "seineagentinfos/status"}, Verbs: []string{"get"}},
			{APIGroups: []string{crdGroup}, Resources: []string{"seineagentinfos/status"}, Verbs: []string{"patch"}},
		},
	}
}

// controllerClusterRole is what seine-controller reads to compute policies,
// the nodes (a node's realization report goes when the node does), and its
// own APIService and admission webhook, whose caBundles it keeps set to the CA of its
// self-signed serving certificate; delegating authentication and
// authorization is granted by the bindings to system:auth-delegator and
// extension-apiserver-authentication-reader.
func controllerClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: meta(controllerName, false, controllerName),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "nodes"}, Verbs: readOnly},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: readOnly},
			// Tiered policy: the controller creates the built-in tiers,
			// refuses to let them go, and writes policies' status and
			// ClusterGroups' members.
			{APIGroups: []string{crdGroup}, Resources: []string{"tiers", "clusternetworkpolicies", "clustergroups", "networkpolicies"}, Verbs: readOnly},
			{APIGroups: []string{crdGroup}, Resources: []string{"tiers"}, Verbs: []string{"create", "update", "patch"}},
			{APIGroups: []string{crdGroup}, Resources: []string{"clusternetworkpolicies/status", "clustergroups/status", "networkpolicies/status"}, Verbs: []string{"update", "patch"}},
			// The upstream ClusterNetworkPolicy, when its CRD is installed.
			{APIGroups: []string{"policy.networking.k8s.io"}, Resources: []string{"clusternetworkpolicies"}, Verbs: readOnly},
			{APIGroups: []string{"policy.networking.k8s.io"}, Resources: []string{"clusternetworkpolicies/status"}, Verbs: []string{"update", "patch"}},
			// Traceflow: resolve the source and destination, tag, and
			// write the verdict.
			{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list"}},
			{APIGroups: []string{crdGroup}, Resources: []string{"traceflows"}, Verbs: readOnly},
			{APIGroups: []string{crdGroup}, Resources: []string{"traceflows/status"}, Verbs: []string{"patch"}},
			// Inventory: one SeineAgentInfo per node, the SeineControllerInfo.
			{APIGroups: []string{crdGroup}, Resources: []string{"seineagentinfos"}, Verbs: []string{"list", "create", "delete"}},
			{APIGroups: []string{crdGroup}, Resources: []string{"seinecontrollerinfos"}, Verbs: []string{"get", "create"}},
			{APIGroups: []string{crdGroup}, Resources: []string{"seinecontrollerinfos/status"}, Verbs: []string{"patch"}},
			{APIGroups: []string{"apiregistration.k8s.io"}, Resources: []string{"apiservices"},
				ResourceNames: []string{controlplaneAPIServiceName, statsAPIServiceName}, Verbs: []string{"get", "patch"}},
			// The admission webhook's caBundle (--validating-webhook-configuration).
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"},
				ResourceNames: []string{apiext.WebhookConfigurationName}, Verbs: []string{"get", "update"}},
		},
	}
}

// viewerClusterRole lets the cluster's built-in view/edit/admin roles read
// controlplane.seine.io and stats.seine.io (kubectl get through API
// aggregation).
func viewerClusterRole() *rbacv1.ClusterRole {
	m := meta("seine-controlplane-viewer", false, "")
	for _, r := range []string{"view", "edit", "admin"} {
		m.Labels["rbac.authorization.k8s.io/aggregate-to-"+r] = "true"
	}
	return &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: m,
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{controlplaneGroup}, Resources: []string{"addressgroups", "appliedtogroups", "networkpolicies", "nodepolicystatuses", "nodepolicystatsreports"}, Verbs: readOnly},
			{APIGroups: []string{statsGroup}, Resources: []string{"networkpolicystats", "seinenetworkpolicystats", "seineclusternetworkpolicystats", "clusternetworkpolicystats"}, Verbs: readOnly},
			{APIGroups: []string{crdGroup}, Resources: []string{"traceflows", "seineagentinfos", "seinecontrollerinfos"}, Verbs: readOnly},
		},
	}
}

// metricsReaderClusterRole is what a Prometheus needs to scrape the agents'
// and the controller's /metrics; the installer binds nobody to it.
func metricsReaderClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: meta(MetricsReaderClusterRole, false, ""),
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}
}

// supportBundleClusterRole is what a support bundle is collected with:
// the agents' and the controller's /supportbundle (bound to the
// seine-supportbundle ServiceAccount only).
func supportBundleClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: meta(SupportBundleName, false, ""),
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/supportbundle"}, Verbs: []string{"get"}}},
	}
}

// supportBundleTokenRole lets whoever it is bound to request a token of
// the seine-supportbundle ServiceAccount, which `seinectl supportbundle`
// does; the installer binds nobody to it (cluster-admin has it already).
func supportBundleTokenRole() *rbacv1.Role {
	return &rbacv1.Role{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
		ObjectMeta: meta(SupportBundleName+"-token", true, ""),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"},
			ResourceNames: []string{SupportBundleName}, Verbs: []string{"create"}}},
	}
}

func clusterRoleBinding(name, role, serviceAccount string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
		ObjectMeta: meta(name, false, serviceAccount),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: Namespace}},
	}
}

func authReaderBinding() *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
		ObjectMeta: meta(controllerName+"-authentication-reader", true, controllerName),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: controllerName, Namespace: Namespace}},
	}
}

func configMap() *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   typeMeta("v1", "ConfigMap"),
		ObjectMeta: meta(configMapName, true, ""),
		Data:       map[string]string{agentConfigKey: AgentConfigTemplate},
	}
}

func selector(component string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": "seine", "component": component}}
}

func controllerService() *corev1.Service {
	return &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: meta(controllerName, true, controllerName),
		Spec: corev1.ServiceSpec{
			Selector: selector(controllerName).MatchLabels,
			Ports: []corev1.ServicePort{{
				Name: "api", Port: 443, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromString("api"),
			}},
		},
	}
}

func resources(cpu, mem string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(mem),
	}}
}

func controllerDeployment(o Options) *appsv1.Deployment {
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString("api"), Scheme: corev1.URISchemeHTTPS,
			}},
			PeriodSeconds: 10, FailureThreshold: 5,
		}
	}
	return &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: meta(controllerName, true, controllerName),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: selector(controllerName),
			// One controller at a time: agents watch exactly one.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector(controllerName).MatchLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName: controllerName,
					PriorityClassName:  "system-cluster-critical",
					// On the host network, so the controller does not depend on
					// the pod network it helps to build.
					HostNetwork:  true,
					DNSPolicy:    corev1.DNSClusterFirstWithHostNet,
					NodeSelector: map[string]string{corev1.LabelOSStable: "linux"},
					Tolerations: []corev1.Toleration{
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
						{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
						{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
					},
					Containers: []corev1.Container{{
						Name:    controllerName,
						Image:   o.image(),
						Command: []string{imageBinDir + "/" + controllerName},
						// No --tls-cert-file: the controller signs its serving
						// certificate for the Service's name and publishes the
						// CA to the APIService and the admission webhook.
						Args: []string{
							fmt.Sprintf("--secure-port=%d", ControllerPort),
							"--service=" + Namespace + "/" + controllerName,
							"--apiservice=" + controlplaneAPIServiceName,
							"--apiservice=" + statsAPIServiceName,
							"--validating-webhook-configuration=" + apiext.WebhookConfigurationName,
						},
						Ports: []corev1.ContainerPort{{
							Name: "api", ContainerPort: ControllerPort, Protocol: corev1.ProtocolTCP,
						}},
						// Where it runs, for its SeineControllerInfo.
						Env: []corev1.EnvVar{
							fieldEnv("POD_NAME", "metadata.name"),
							fieldEnv("POD_NAMESPACE", "metadata.namespace"),
							fieldEnv("NODE_NAME", "spec.nodeName"),
						},
						ReadinessProbe: probe("/readyz"),
						LivenessProbe:  probe("/livez"),
						Resources:      resources("200m", "100Mi"),
					}},
				},
			},
		},
	}
}

// fieldEnv is an environment variable set from a field of the pod.
func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// apiService registers seine-controller with the kube-apiserver's
// aggregator for group/version (controlplane.seine.io/v1beta1,
// stats.seine.io/v1alpha1).
func apiService(name, group, version string) *APIService {
	return &APIService{
		TypeMeta:   typeMeta("apiregistration.k8s.io/v1", "APIService"),
		ObjectMeta: meta(name, false, controllerName),
		Spec: APIServiceSpec{
			Service: &ServiceReference{Namespace: Namespace, Name: controllerName, Port: ptr.To[int32](443)},
			Group:   group,
			Version: version,
			// No caBundle: seine-controller signs its serving certificate
			// at start and sets the caBundle to that CA (--apiservice).
			// Until it has, the aggregator reports the API unavailable.
			GroupPriorityMinimum: 100,
			VersionPriority:      100,
		},
	}
}

// APIService is apiregistration.k8s.io/v1 APIService, with the fields Seine
// sets. It is declared here rather than importing k8s.io/kube-aggregator,
// a large module, for one object; the server-side apply test checks it
// against a real kube-apiserver.
type APIService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              APIServiceSpec `json:"spec"`
}

// APIServiceSpec is the spec of an APIService.
type APIServiceSpec struct {
	Service               *ServiceReference `json:"service,omitempty"`
	Group                 string            `json:"group"`
	Version               string            `json:"version"`
	InsecureSkipTLSVerify bool              `json:"insecureSkipTLSVerify,omitempty"`
	CABundle              []byte            `json:"caBundle,omitempty"`
	GroupPriorityMinimum  int32             `json:"groupPriorityMinimum"`
	VersionPriority       int32             `json:"versionPriority"`
}

// ServiceReference points an APIService at a Service.
type ServiceReference struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      *int32 `json:"port,omitempty"`
}

// apiExtensions are the CustomResourceDefinitions of crd.seine.io and the
// tiers' ValidatingAdmissionPolicy (installer/kubernetes/apiext). The
// files are embedded and a test renders them, so an error is a broken
// build.
func apiExtensions() []any {
	objs, err := apiext.Objects()
	if err != nil {
		panic(err)
	}
	out := make([]any, len(objs))
	for i, o := range objs {
		out[i] = o
	}
	return out
}
