package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/probe"
)

// PodNetNS returns the network namespace path of a running pod, as its
// node's kubelet stand-in created it.
func (c *Config) PodNetNS(pod *corev1.Pod) (string, error) {
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled", pod.Namespace, pod.Name)
	}
	if pod.Spec.HostNetwork {
		return c.NetNSPath(pod.Spec.NodeName), nil
	}
	p := filepath.Join(c.NodePodNetNSDir(pod.Spec.NodeName), string(pod.UID))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pod %s/%s has no sandbox on %s (not started yet?): %w", pod.Namespace, pod.Name, pod.Spec.NodeName, err)
	}
	return p, nil
}

// GetPod reads "namespace/name" (or "name" in default).
func GetPod(ctx context.Context, cs kubernetes.Interface, ref string) (*corev1.Pod, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		ns, name = "default", ref
	}
	return cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

// PodReady reports the pod's Ready condition.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// DemoDeployment is the Deployment `lab demo` runs: pods that answer TCP
// and UDP probes with their own name.
func DemoDeployment(name string, replicas int32) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec: corev1.PodSpec{
					// Spread over the nodes, as a real scheduler does with
					// this constraint.
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.ScheduleAnyway,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: sel},
					}},
					Containers: []corev1.Container{{
						Name: "server", Image: "lab/probe-server",
						Ports: []corev1.ContainerPort{
							{Name: "tcp", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
							{Name: "udp", ContainerPort: 8081, Protocol: corev1.ProtocolUDP},
						},
					}},
				},
			},
		},
	}
}

// WaitDeploymentReady waits until every replica of the Deployment is ready
// and returns its pods.
func WaitDeploymentReady(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) ([]corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Spec.Replicas != nil && d.Status.ReadyReplicas == *d.Spec.Replicas && d.Status.UpdatedReplicas == *d.Spec.Replicas {
			sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String()
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err == nil {
				var ready []corev1.Pod
				for _, p := range pods.Items {
					if p.DeletionTimestamp == nil && PodReady(&p) {
						ready = append(ready, p)
					}
				}
				if len(ready) == int(*d.Spec.Replicas) {
					sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })
					return ready, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			status := "not found"
			if d != nil {
				status = fmt.Sprintf("%d/%d ready", d.Status.ReadyReplicas, d.Status.Replicas)
				sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String()
				status += "\n" + DescribePods(context.WithoutCancel(ctx), cs, ns, sel)
			}
			return nil, fmt.Errorf("deployment %s/%s not ready after %s: %s", ns, name, timeout, status)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Demo runs the lab's main job: a Deployment of `replicas` pods spread over
// the nodes, then a TCP and UDP probe from every pod to every other pod. It
// prints the nodes, the pods and the reachability matrix, and fails if any
// pair cannot talk. On a lab running Seine it then applies a NetworkPolicy
// (see demoNetworkPolicyStep), shows its realization status and that it is
// enforced, and removes it.
func Demo(ctx context.Context, c *Config, w io.Writer, replicas int32) error {
	if c.Kubelet == KubeletReal {
		return realDemo(ctx, c, w, replicas)
	}
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	const name = "lab-demo"
	_, err = cs.AppsV1().Deployments("default").Create(ctx, DemoDeployment(name, replicas), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	pods, err := WaitDeploymentReady(ctx, cs, "default", name, 3*time.Minute)
	if err != nil {
		return err
	}
	if err := PrintNodes(ctx, cs, w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP\tREADY")
	for _, p := range pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", p.Name, p.Spec.NodeName, p.Status.PodIP, PodReady(&p))
	}
	tw.Flush()
	fmt.Fprintln(w)
	bad := 0
	for _, proto := range []string{"tcp", "udp"} {
		port := map[string]string{"tcp": "8080", "udp": "8081"}[proto]
		m, n, err := c.ProbeMatrix(ctx, pods, proto, port)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s reachability (row: from, column: to; . = answered with the right pod name):\n%s\n", strings.ToUpper(proto), m)
		bad += n
	}
	if bad > 0 {
		return fmt.Errorf("%d pod pairs could not reach each other", bad)
	}
	fmt.Fprintf(w, "all %d pods reach each other over TCP and UDP\n", len(pods))
	if c.CNI != CNISeine || len(pods) < 2 {
		return nil
	}
	fmt.Fprintln(w)
	return demoNetworkPolicyStep(ctx, c, cs, w, name, pods)
}

// ProbeMatrix probes from every pod to every pod and renders the result:
// "." for a correct answer, "X" for none, "?" for a wrong name.
func (c *Config) ProbeMatrix(ctx context.Context, pods []corev1.Pod, proto, port string) (string, int, error) {
	var b strings.Builder
	bad := 0
	fmt.Fprintf(&b, "%-4s", "")
	for j := range pods {
		fmt.Fprintf(&b, " %2d", j)
	}
	b.WriteString("\n")
	for i, from := range pods {
		ns, err := c.PodNetNS(&from)
		if err != nil {
			return "", 0, err
		}
		fmt.Fprintf(&b, "%-4d", i)
		for _, to := range pods {
			reply, err := probe.Probe(ctx, ns, proto, to.Status.PodIP+":"+port, 2*time.Second)
			mark := "."
			switch {
			case err != nil:
				mark, bad = "X", bad+1
			case strings.TrimSpace(reply) != to.Name:
				mark, bad = "?", bad+1
			}
			fmt.Fprintf(&b, " %2s", mark)
		}
		fmt.Fprintf(&b, "   %s (%s)\n", from.Name, from.Spec.NodeName)
	}
	return b.String(), bad, nil
}

// PrintNodes prints the nodes like `kubectl get nodes -o wide`.
func PrintNodes(ctx context.Context, cs kubernetes.Interface, w io.Writer) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATUS\tINTERNAL-IP\tPOD-CIDR\tOS")
	for _, n := range nodes.Items {
		status := "NotReady"
		if NodeReady(&n) {
			status = "Ready"
		}
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, status, ip, n.Spec.PodCIDR, n.Labels["kubernetes.io/os"])
	}
	return tw.Flush()
}
