package lab

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// DescribePods says why the pods in ns matching selector are not ready, as
// `kubectl describe` would in short: each pod's node, phase, conditions
// that are false, every container that is not ready with its state (a
// waiting reason and message, a termination's exit code) and the pod's last
// events. It is what a failed wait reports, so a test log tells the reason
// without a cluster to look at.
func DescribePods(ctx context.Context, cs kubernetes.Interface, ns, selector string) string {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Sprintf("list pods in %s (%s): %v", ns, selector, err)
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s/%s on %q: %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase)
		if p.Status.Reason != "" {
			fmt.Fprintf(&b, " (%s: %s)", p.Status.Reason, p.Status.Message)
		}
		b.WriteString("\n")
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				fmt.Fprintf(&b, "  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
			}
		}
		statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
		for _, s := range statuses {
			if s.Ready {
				continue
			}
			fmt.Fprintf(&b, "  container %s: restarts %d, %s\n", s.Name, s.RestartCount, containerState(s.State))
			if s.LastTerminationState.Terminated != nil {
				fmt.Fprintf(&b, "    last: %s\n", containerState(s.LastTerminationState))
			}
		}
		b.WriteString(podEvents(ctx, cs, &p, 8))
	}
	if len(pods.Items) == 0 {
		fmt.Fprintf(&b, "no pods in %s match %q\n", ns, selector)
	}
	return b.String()
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Waiting != nil:
		return "waiting: " + s.Waiting.Reason + " " + s.Waiting.Message
	case s.Terminated != nil:
		return fmt.Sprintf("terminated: exit %d %s %s", s.Terminated.ExitCode, s.Terminated.Reason, s.Terminated.Message)
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.String()
	}
	return "no state"
}

// podEvents returns the pod's last n events, oldest first.
func podEvents(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, n int) string {
	evs, err := cs.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.uid", string(p.UID)).String(),
	})
	if err != nil {
		return fmt.Sprintf("  events: %v\n", err)
	}
	items := evs.Items
	sort.Slice(items, func(i, j int) bool { return items[i].LastTimestamp.Before(&items[j].LastTimestamp) })
	if len(items) > n {
		items = items[len(items)-n:]
	}
	var b strings.Builder
	for _, e := range items {
		fmt.Fprintf(&b, "  event %s %s (x%d): %s\n", e.Type, e.Reason, max(e.Count, 1), strings.TrimSpace(e.Message))
	}
	return b.String()
}
