package bundle

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Kube is what the cluster says about Seine: the server version, the nodes
// (readiness, podCIDRs, OS) and Seine's pods (label app=seine) in namespace.
func Kube(name string, cs kubernetes.Interface, namespace string) Source {
	return Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			return fmt.Errorf("server version: %w", err)
		}
		fmt.Fprintf(w, "server: %s\n\n", v.GitVersion)
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tREADY\tOS\tPOD CIDRS\tINTERNAL IP")
		for _, n := range nodes.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", n.Name, nodeReady(&n), n.Labels[corev1.LabelOSStable], n.Spec.PodCIDRs, internalIP(&n))
		}
		tw.Flush()
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=seine"})
		if err != nil {
			return fmt.Errorf("pods: %w", err)
		}
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "POD\tNODE\tPHASE\tRESTARTS")
		for _, p := range pods.Items {
			var restarts int32
			for _, s := range p.Status.ContainerStatuses {
				restarts += s.RestartCount
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%d\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, restarts)
		}
		return tw.Flush()
	}}
}

func nodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// AgentPodLog is the tail of the seine-agent container's log in the
// agent pod running on node (a DaemonSet install logs there, not to a file).
func AgentPodLog(name string, cs kubernetes.Interface, namespace, node string, tailLines int64) Source {
	return Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app=seine,component=seine-agent",
			FieldSelector: "spec.nodeName=" + node,
		})
		if err != nil {
			return fmt.Errorf("agent pod on %s: %w", node, err)
		}
		// The server filters by node; so does this, for servers (and fakes)
		// that ignore field selectors.
		i := slices.IndexFunc(pods.Items, func(p corev1.Pod) bool { return p.Spec.NodeName == node })
		if i < 0 {
			return fmt.Errorf("no seine-agent pod on node %s in %s", node, namespace)
		}
		p := pods.Items[i]
		fmt.Fprintf(w, "# %s/%s, container seine-agent, last %d lines\n", p.Namespace, p.Name, tailLines)
		rc, err := cs.CoreV1().Pods(namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: "seine-agent", TailLines: &tailLines}).Stream(ctx)
		if err != nil {
			return fmt.Errorf("logs of %s: %w", p.Name, err)
		}
		defer rc.Close()
		_, err = io.Copy(w, rc)
		return err
	}}
}
