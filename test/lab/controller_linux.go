package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/seine-cni/seine/installer/kubernetes/apiext"
	"github.com/seine-cni/seine/installer/kubernetes/manifest"
)

// startController runs seine-controller on the machine, listening on
// ControllerIP, and registers it as the server of controlplane.seine.io
// (Service + EndpointSlice + APIService), so agents and kubectl reach it
// through the kube-apiserver, and of crd.seine.io's admission webhook. It
// returns once the APIService is Available and the webhook answers.
func (c *Config) startController(ctx context.Context, cs kubernetes.Interface) error {
	if err := labRBAC(ctx, cs); err != nil {
		return err
	}
	if err := c.addControllerLink(ctx); err != nil {
		return err
	}
	if err := c.installAPIExtensions(ctx); err != nil {
		return err
	}
	if err := c.runController(ctx); err != nil {
		return err
	}
	ca, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return err
	}
	dc, err := c.adminDynamic()
	if err != nil {
		return err
	}
	if err := c.registerAPIService(ctx, cs, dc, ca); err != nil {
		return err
	}
	return c.registerAdmissionWebhook(ctx, dc, ca)
}

// runController starts the seine-controller process and waits until it is
// ready.
func (c *Config) runController(ctx context.Context) error {
	return c.runControllerWith(ctx, false)
}

// runControllerWith starts seine-controller with the lab CA's certificate,
// or, selfSigned, as seine.yml does: a certificate it signs itself for the
// Service's name, whose CA it publishes to the APIService.
func (c *Config) runControllerWith(ctx context.Context, selfSigned bool) error {
	argv := []string{
		filepath.Join(c.SeineBin, "seine-controller"),
		"--kubeconfig", c.KubeconfigPath("seine-controller"),
		"--bind-address", c.ControllerIP(), "--secure-port", strconv.Itoa(c.ControllerPort),
	}
	if selfSigned {
		argv = append(argv, "--service", controllerNamespace+"/"+controllerService, "--apiservice", APIServiceName,
			"--apiservice", StatsAPIServiceName, "--validating-webhook-configuration", apiext.WebhookConfigurationName)
	} else {
		argv = append(argv, "--tls-cert-file", c.pki("seine-controller.crt"), "--tls-private-key-file", c.pki("seine-controller.key"))
	}
	if err := c.startComponent(component{name: "seine-controller", argv: argv}); err != nil {
		return err
	}
	tlsClient, err := c.adminHTTP()
	if err != nil {
		return err
	}
	if selfSigned {
		// Only the process's readiness is asked here; verifying its
		// certificate is the aggregator's job, which the caller checks.
		tlsClient.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	// /readyz is open to anonymous users and includes the controller's
	// "policies computed" check.
	return c.waitHTTP(ctx, "seine-controller", c.ControllerURL()+"/readyz", tlsClient, 60*time.Second)
}

// StopController stops seine-controller (SIGTERM), for tests of agents
// riding out a controller restart; StartController starts it again.
func (c *Config) StopController() error { return c.stopComponent("seine-controller", 10*time.Second) }

// StartController starts seine-controller after StopController and waits
// until it is ready.
func (c *Config) StartController(ctx context.Context) error { return c.runController(ctx) }

// StartControllerSelfSigned starts seine-controller after StopController
// the way seine.yml runs it: no certificate given, so it signs its own and
// keeps the APIService's caBundle set to that CA. It waits until the
// process is ready, not until the aggregator trusts it.
func (c *Config) StartControllerSelfSigned(ctx context.Context) error {
	return c.runControllerWith(ctx, true)
}

// APIServiceName is the APIService of controlplane.seine.io/v1beta1, and
// StatsAPIServiceName that of stats.seine.io/v1alpha1 (policy stats): the
// controller serves both.
const (
	APIServiceName      = "v1beta1.controlplane.seine.io"
	StatsAPIServiceName = "v1alpha1.stats.seine.io"
)

// addControllerLink gives the machine's namespace ControllerIP, on one end
// of a veth whose other end (ctl0) lies in the fabric namespace: the
// kernel here has no dummy link type, and a veth also disappears with the
// fabric namespace if `lab down` is interrupted. removeControllerLink
// (from Down) deletes it.
func (c *Config) addControllerLink(ctx context.Context) error {
	link, fabric := c.ControllerLink(), c.NetNS("fabric")
	for _, s := range [][]string{
		{"link", "add", link, "type", "veth", "peer", "name", "ctl0", "netns", fabric},
		{"-n", fabric, "link", "set", "ctl0", "up"},
		{"addr", "add", c.ControllerIP() + "/32", "dev", link},
		{"link", "set", link, "up"},
	} {
		if _, err := sh(ctx, "ip", s...); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) removeControllerLink(ctx context.Context) error {
	if _, err := os.Stat("/sys/class/net/" + c.ControllerLink()); err != nil {
		return nil
	}
	_, err := sh(ctx, "ip", "link", "del", c.ControllerLink())
	return err
}

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// registerAPIService points v1beta1.controlplane.seine.io and
// v1alpha1.stats.seine.io at the controller, trusting ca, and waits until
// the aggregator reports both Available.
func (c *Config) registerAPIService(ctx context.Context, cs kubernetes.Interface, dc dynamic.Interface, ca []byte) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: controllerService, Namespace: controllerNamespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Port: 443, TargetPort: intstr.FromInt32(int32(c.ControllerPort)), Protocol: corev1.ProtocolTCP,
		}}},
	}
	if _, err := cs.CoreV1().Services(controllerNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service: %w", err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: controllerService, Namespace: controllerNamespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: controllerService,
			discoveryv1.LabelManagedBy:   "seine-lab",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{c.ControllerIP()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To(int32(c.ControllerPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(controllerNamespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("endpointslice: %w", err)
	}
	for _, gv := range []schema.GroupVersion{{Group: "controlplane.seine.io", Version: "v1beta1"}, {Group: "stats.seine.io", Version: "v1alpha1"}} {
		as := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1",
			"kind":       "APIService",
			"metadata":   map[string]any{"name": gv.Version + "." + gv.Group},
			"spec": map[string]any{
				"group": gv.Group, "version": gv.Version,
				"groupPriorityMinimum": int64(100), "versionPriority": int64(100),
				"service":  map[string]any{"name": controllerService, "namespace": controllerNamespace, "port": int64(443)},
				"caBundle": b64(ca),
			},
		}}
		if _, err := dc.Resource(apiServiceGVR).Create(ctx, as, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apiservice %s: %w", as.GetName(), err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var last string
		for _, name := range []string{APIServiceName, StatsAPIServiceName} {
			got, err := dc.Resource(apiServiceGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				break
			}
			last = name + ": no Available condition"
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cd := range conds {
				m, _ := cd.(map[string]any)
				if m["type"] == "Available" {
					if m["status"] == "True" {
						last = ""
					} else {
						last = fmt.Sprintf("%s: %v: %v", name, m["reason"], m["message"])
					}
				}
			}
			if last != "" {
				break
			}
		}
		if last == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apiservices not available after 60s: %s\n%s", last, c.logTail("seine-controller", 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// adminDynamic is a dynamic client of the lab's admin.
func (c *Config) adminDynamic() (dynamic.Interface, error) {
	rc, err := c.restConfig("admin")
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(rc)
}

// registerAdmissionWebhook registers seine-controller's admission webhook
// of crd.seine.io as seine.yml does (apiext.AdmissionWebhook), with the lab
// CA as its caBundle, and waits until the kube-apiserver calls it: a dry
// run create of a ClusterNetworkPolicy in a tier that does not exist is
// refused by the webhook.
func (c *Config) registerAdmissionWebhook(ctx context.Context, dc dynamic.Interface, ca []byte) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(apiext.AdmissionWebhook(controllerNamespace, controllerService, ca))
	if err != nil {
		return err
	}
	vwcGVR := schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}
	if _, err := dc.Resource(vwcGVR).Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("validatingwebhookconfiguration: %w", err)
	}
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "lab-webhook-probe"},
		"spec":     map[string]any{"tier": "lab-no-such-tier", "priority": int64(1), "appliedTo": []any{map[string]any{"podSelector": map[string]any{}}}},
	}}
	cnps := dc.Resource(schema.GroupVersionResource{Group: "crd.seine.io", Version: "v1beta1", Resource: "clusternetworkpolicies"})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cnps.Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "tier lab-no-such-tier does not exist") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the admission webhook does not answer after 30s: a dry run create in a tier that does not exist: %v\n%s", err, c.logTail("seine-controller", 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// labRBAC creates seine.yml's ClusterRoles (manifest.ClusterRoles) and
// binds the lab's identities to them as seine.yml binds its
// ServiceAccounts: seine-controller (and its delegation of authentication
// and authorization: TokenReview, SubjectAccessReview, the
// extension-apiserver-authentication ConfigMap), seine-agent (and the
// delegation of its /metrics scrapes), and the lab's Prometheus to the
// metrics reader, and seinectl supportbundle's ServiceAccount to its role.
// The agent and the controller both call it; what exists
// already is left.
func labRBAC(ctx context.Context, cs kubernetes.Interface) error {
	user := func(name string) []rbacv1.Subject {
		return []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: name}}
	}
	bind := func(name, role, subject string) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: user(subject),
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}}
	}
	for _, r := range manifest.ClusterRoles() {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("clusterrole %s: %w", r.Name, err)
		}
	}
	for _, b := range []*rbacv1.ClusterRoleBinding{
		bind("seine-controller", manifest.ControllerClusterRole, "seine:controller"),
		bind("seine-controller-auth-delegator", "system:auth-delegator", "seine:controller"),
		bind("seine-agent", manifest.AgentClusterRole, "seine:agent"),
		bind("seine-agent-auth-delegator", "system:auth-delegator", "seine:agent"),
		bind("seine-metrics-reader", manifest.MetricsReaderClusterRole, PrometheusUser),
	} {
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("clusterrolebinding %s: %w", b.Name, err)
		}
	}
	// seinectl supportbundle's ServiceAccount, bound as seine.yml binds it.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: manifest.SupportBundleName, Namespace: "kube-system"}}
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("serviceaccount %s: %w", sa.Name, err)
	}
	sb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: manifest.SupportBundleName},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: manifest.SupportBundleName, Namespace: "kube-system"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: manifest.SupportBundleName}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, sb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("clusterrolebinding %s: %w", sb.Name, err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "seine-controller-authentication-reader", Namespace: "kube-system"},
		Subjects:   user("seine:controller"),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"},
	}
	if _, err := cs.RbacV1().RoleBindings("kube-system").Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("rolebinding %s: %w", rb.Name, err)
	}
	return nil
}

// installAPIExtensions creates seine.yml's CustomResourceDefinitions
// (crd.seine.io) and the tiers' ValidatingAdmissionPolicies, as `kubectl
// apply -f seine.yml` does, and the upstream ClusterNetworkPolicy's CRD
// shipped beside it, and waits until the CRDs are established, so the
// controller starts with tiered policy on.
func (c *Config) installAPIExtensions(ctx context.Context) error {
	objs, err := apiext.Objects()
	if err != nil {
		return err
	}
	upstreamCRD := apiext.UpstreamCRD
	if c.UpstreamExperimental {
		upstreamCRD = apiext.UpstreamExperimentalCRD
	}
	upstream, err := upstreamCRD()
	if err != nil {
		return err
	}
	objs = append(objs, upstream)
	dc, err := c.adminDynamic()
	if err != nil {
		return err
	}
	gvrs := map[string]schema.GroupVersionResource{
		"CustomResourceDefinition":         {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"},
		"ValidatingAdmissionPolicy":        {Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicies"},
		"ValidatingAdmissionPolicyBinding": {Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingadmissionpolicybindings"},
	}
	var crds []string
	for _, m := range objs {
		u := &unstructured.Unstructured{Object: m}
		gvr, ok := gvrs[u.GetKind()]
		if !ok {
			return fmt.Errorf("api extension of unknown kind %s", u.GetKind())
		}
		if _, err := dc.Resource(gvr).Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		if u.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, u.GetName())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range crds {
		for {
			got, err := dc.Resource(gvrs["CustomResourceDefinition"]).Get(ctx, name, metav1.GetOptions{})
			established := false
			if err == nil {
				conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
				for _, cd := range conds {
					m, _ := cd.(map[string]any)
					established = established || (m["type"] == "Established" && m["status"] == "True")
				}
			}
			if established {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("crd %s not established after 30s (last error: %v)", name, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}
