package supportbundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/bundle"
)

// ObjectGroups are the API groups whose every resource goes into the
// bundle: Seine's custom resources and what the controller computed
// (through API aggregation).
var ObjectGroups = []string{"crd.seine.io/v1beta1", "controlplane.seine.io/v1beta1", "stats.seine.io/v1alpha1"}

// UpstreamClusterNetworkPolicies are the network-policy-api's cluster
// policies, which Seine enforces.
var UpstreamClusterNetworkPolicies = schema.GroupVersionResource{Group: "policy.networking.k8s.io", Version: "v1beta1", Resource: "clusternetworkpolicies"}

// cluster collects what the kube-apiserver and the controller hold:
// nodes and Seine's pods, Seine's objects, seine.yml's ConfigMaps (never a
// Secret), the controller's log and its own part.
func (c *collector) cluster(ctx context.Context) []error {
	var errs []error
	add := func(dir string, s bundle.Source) {
		if err := c.ar.addSource(ctx, dir, s); err != nil {
			errs = append(errs, fmt.Errorf("%s%s: %w", dir, s.Name, err))
		}
	}
	add("cluster/", bundle.Kube("nodes.txt", c.o.Kube, c.o.Namespace))
	for _, gv := range ObjectGroups {
		for _, s := range c.groupSources(ctx, gv) {
			add("cluster/", s)
		}
	}
	add("cluster/", objects("policy.networking.k8s.io/clusternetworkpolicies.yaml", c.o.Dynamic, UpstreamClusterNetworkPolicies, ""))
	add("cluster/", c.configMaps())
	add("cluster/", registration(c.o.Dynamic))
	add("controller/", podLog("pod.log", c.o.Kube, c.o.Namespace, "component=seine-controller", "seine-controller", "", c.o.Since))
	addr := c.o.ControllerAddress
	if addr == "" {
		var err error
		if addr, err = c.controllerAddress(ctx); err != nil {
			c.ar.add("controller/ERROR.txt", fmt.Appendf(nil, "the controller's part could not be collected: %v\n", err))
			return append(errs, fmt.Errorf("seine-controller: %w", err))
		}
	}
	tctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	if _, _, err := c.fetch(tctx, "https://"+addr+bundle.Path, "controller/"); err != nil {
		c.ar.add("controller/ERROR.txt", fmt.Appendf(nil, "the controller's part could not be collected: %v\n", err))
		errs = append(errs, fmt.Errorf("seine-controller at %s: %w", addr, err))
	}
	return errs
}

// groupSources are one file per listable resource of the group version,
// or one saying why the group could not be read.
func (c *collector) groupSources(_ context.Context, gv string) []bundle.Source {
	list, err := c.o.Kube.Discovery().ServerResourcesForGroupVersion(gv)
	group := strings.Split(gv, "/")[0]
	if err != nil {
		return []bundle.Source{{Name: group + "/ERROR.txt", Collect: func(context.Context, io.Writer) error {
			return fmt.Errorf("discovery of %s: %w", gv, err)
		}}}
	}
	sgv, _ := schema.ParseGroupVersion(gv)
	var srcs []bundle.Source
	for _, r := range list.APIResources {
		if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || r.Name == "secrets" {
			continue
		}
		srcs = append(srcs, objects(group+"/"+r.Name+".yaml", c.o.Dynamic, sgv.WithResource(r.Name), metav1.NamespaceAll))
	}
	slices.SortFunc(srcs, func(a, b bundle.Source) int { return strings.Compare(a.Name, b.Name) })
	return srcs
}

// objects lists a resource as YAML, without managed fields.
func objects(name string, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns string) bundle.Source {
	return bundle.Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		if gvr.Resource == "secrets" {
			return errors.New("a bundle holds no Secret")
		}
		l, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			fmt.Fprintf(w, "# %s is not served here\n", gvr)
			return nil
		}
		if err != nil {
			return err
		}
		return writeYAML(w, l.Items)
	}}
}

// Where Seine's APIs are registered: the APIServices and
// CustomResourceDefinitions of Seine's groups and of the upstream
// ClusterNetworkPolicy.
var (
	apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	crds        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// registration is how Seine's APIs are registered: its APIServices (with
// their Available condition) and the CustomResourceDefinitions of
// crd.seine.io and policy.networking.k8s.io (versions, stored versions,
// Established), without their schemas.
func registration(dyn dynamic.Interface) bundle.Source {
	return bundle.Source{Name: "registration.yaml", Collect: func(ctx context.Context, w io.Writer) error {
		as, err := dyn.Resource(apiServices).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("apiservices: %w", err)
		}
		var items []unstructured.Unstructured
		for _, a := range as.Items {
			if g, _, _ := unstructured.NestedString(a.Object, "spec", "group"); strings.HasSuffix(g, ".seine.io") {
				items = append(items, a)
			}
		}
		cs, err := dyn.Resource(crds).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("customresourcedefinitions: %w", err)
		}
		for _, c := range cs.Items {
			g, _, _ := unstructured.NestedString(c.Object, "spec", "group")
			if g != "crd.seine.io" && g != UpstreamClusterNetworkPolicies.Group {
				continue
			}
			versions, _, _ := unstructured.NestedSlice(c.Object, "spec", "versions")
			for _, v := range versions {
				if m, ok := v.(map[string]any); ok {
					delete(m, "schema")
				}
			}
			_ = unstructured.SetNestedSlice(c.Object, versions, "spec", "versions")
			items = append(items, c)
		}
		return writeYAML(w, items)
	}}
}

// configMaps are Seine's ConfigMaps (label app=seine in its namespace).
func (c *collector) configMaps() bundle.Source {
	return bundle.Source{Name: "configmaps.yaml", Collect: func(ctx context.Context, w io.Writer) error {
		l, err := c.o.Kube.CoreV1().ConfigMaps(c.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=seine"})
		if err != nil {
			return err
		}
		for i := range l.Items {
			l.Items[i].ManagedFields = nil
			fmt.Fprintln(w, "---")
			b, err := yaml.Marshal(&l.Items[i])
			if err != nil {
				return err
			}
			w.Write(b)
		}
		return nil
	}}
}

func writeYAML(w io.Writer, items []unstructured.Unstructured) error {
	fmt.Fprintf(w, "# %d objects\n", len(items))
	for i := range items {
		items[i].SetManagedFields(nil)
		b, err := yaml.Marshal(items[i].Object)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "---")
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// agentInfo is the node's SeineAgentInfo (the agent's heartbeat).
func agentInfo(dyn dynamic.Interface, node string) bundle.Source {
	gvr := schema.GroupVersionResource{Group: "crd.seine.io", Version: "v1beta1", Resource: "seineagentinfos"}
	return bundle.Source{Name: "agentinfo.yaml", Collect: func(ctx context.Context, w io.Writer) error {
		o, err := dyn.Resource(gvr).Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return writeYAML(w, []unstructured.Unstructured{*o})
	}}
}

// podLog is the log of a Seine pod's container (on node, if given) and,
// when it restarted, of the container before, through the kube-apiserver; an install whose component runs outside a
// pod (a Windows service, systemd) says so and is not a failure.
func podLog(name string, cs kubernetes.Interface, ns, selector, container, node string, since time.Duration) bundle.Source {
	return bundle.Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		lo := metav1.ListOptions{LabelSelector: "app=seine," + selector}
		if node != "" {
			lo.FieldSelector = "spec.nodeName=" + node
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, lo)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(pods.Items, func(p corev1.Pod) bool { return node == "" || p.Spec.NodeName == node })
		if i < 0 {
			_, err := fmt.Fprintf(w, "# no pod %s in %s: %s runs outside a pod here (its own log is in its part)\n", selector, ns, container)
			return err
		}
		p := pods.Items[i]
		opts := &corev1.PodLogOptions{Container: container}
		if since > 0 {
			secs := int64(since.Seconds())
			opts.SinceSeconds = &secs
		}
		fmt.Fprintf(w, "# %s/%s, container %s\n", p.Namespace, p.Name, container)
		if err := copyLog(ctx, w, cs, ns, p.Name, opts); err != nil {
			return err
		}
		// A container that restarted: the log of the one before, which
		// is where a crash is.
		for _, st := range p.Status.ContainerStatuses {
			if st.Name == container && st.RestartCount > 0 {
				fmt.Fprintf(w, "\n# the previous container (%d restarts)\n", st.RestartCount)
				prev := *opts
				prev.Previous = true
				return copyLog(ctx, w, cs, ns, p.Name, &prev)
			}
		}
		return nil
	}}
}

func copyLog(ctx context.Context, w io.Writer, cs kubernetes.Interface, ns, pod string, opts *corev1.PodLogOptions) error {
	rc, err := cs.CoreV1().Pods(ns).GetLogs(pod, opts).Stream(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(w, io.LimitReader(rc, maxPartBytes))
	return err
}

// controllerAddress is where the running seine-controller pod serves
// (host network: its pod IP and its "api" port).
func (c *collector) controllerAddress(ctx context.Context) (string, error) {
	pods, err := c.o.Kube.CoreV1().Pods(c.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=seine,component=seine-controller"})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			continue
		}
		for _, ct := range p.Spec.Containers {
			for _, port := range ct.Ports {
				if port.Name == "api" {
					return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port.ContainerPort))), nil
				}
			}
		}
	}
	return "", fmt.Errorf("no running seine-controller pod in %s", c.o.Namespace)
}

// summary says what the bundle holds and what is missing.
func summary(o Options, r Result, took time.Duration) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Seine cluster support bundle, %s (collected in %s)\n", o.Now().UTC().Format(time.RFC3339), took.Round(time.Millisecond))
	fmt.Fprintf(&b, "node selector: %q, since: %s, nodes: %d\n\n", o.NodeSelector, sinceText(o.Since), len(r.Nodes))
	for _, n := range r.Nodes {
		if n.Err != nil {
			fmt.Fprintf(&b, "FAIL  node %-24s %v (after %s)\n", n.Node, n.Err, n.Took.Round(time.Millisecond))
		} else {
			fmt.Fprintf(&b, "OK    node %-24s %d bytes (%s)", n.Node, n.Bytes, n.Took.Round(time.Millisecond))
			if len(n.FailedSources) > 0 {
				fmt.Fprintf(&b, "; failed in it: %s", strings.Join(n.FailedSources, ", "))
			}
			fmt.Fprintln(&b)
		}
	}
	for _, err := range r.Failed {
		fmt.Fprintf(&b, "FAIL  %v\n", err)
	}
	return b.Bytes()
}

func sinceText(d time.Duration) string {
	if d == 0 {
		return "all the agents keep"
	}
	return d.String()
}
