package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"text/template"
	"time"

	"github.com/containernetworking/cni/libcni"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	// kubeletVersion is what the Node reports: the Kubernetes release the lab runs.
	kubeletVersion = "v1.37.2"
	leaseNamespace = "kube-node-lease"
	maxPods        = 110
	// condNetworkReady and condNetworkNotReady mark the NetworkUnavailable condition as this kubelet's;
	// one set by someone else (a CNI agent) is left alone.
	condNetworkReady    = "KubeletNetworkReady"
	condNetworkNotReady = "KubeletNetworkNotReady"
)

// runNode registers the Node, then keeps its status and Lease fresh until ctx is done.
func (k *kubelet) runNode(ctx context.Context) {
	var node *corev1.Node
	backoff := wait.Backoff{Duration: k.timing.retryBase, Factor: 2, Steps: 1 << 30, Cap: k.timing.retryMax}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		var err error
		if node, err = k.registerNode(ctx); err != nil {
			k.log.Error("node registration failed, will retry", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return // ctx done
	}
	k.log.Info("node registered")

	rendered := k.cfg.CNIConfTemplate == ""
	var lastReady *bool
	var lastReport time.Time
	var lastReason string
	poll := time.NewTicker(k.timing.configPoll)
	defer poll.Stop()
	lease := time.NewTicker(k.timing.leaseRenew)
	defer lease.Stop()
	k.renewLease(ctx, node)
	for {
		if !rendered {
			rendered = k.renderConfig(ctx)
		}
		netErr := k.networkReady(ctx)
		if ctx.Err() != nil {
			return // a STATUS cut short by shutdown says nothing about the network
		}
		ready := netErr == nil
		// A new reason for being not ready is reported too: it is what a
		// person debugging the node needs to see.
		if reason := errString(netErr); reason != lastReason {
			if lastReady != nil && *lastReady == ready {
				k.log.Info("node readiness", "ready", ready, "reason", reason)
			}
			lastReason = reason
			lastReport = time.Time{}
		}
		if lastReady == nil || *lastReady != ready || time.Since(lastReport) >= k.timing.statusReport {
			if err := k.updateNodeStatus(ctx, netErr); err != nil {
				k.log.Error("node status update failed", "err", err)
			} else {
				if lastReady == nil || *lastReady != ready {
					k.log.Info("node readiness", "ready", ready, "reason", errString(netErr))
				}
				lastReady, lastReport = &ready, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			k.renewLease(ctx, node)
		case <-poll.C:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// registerNode creates the Node or, if it exists (a restart), makes sure it carries our
// labels. It returns the Node as stored.
func (k *kubelet) registerNode(ctx context.Context) (*corev1.Node, error) {
	labels := map[string]string{}
	for key, v := range k.cfg.Labels {
		labels[key] = v
	}
	labels[corev1.LabelOSStable] = k.cfg.OS
	labels[corev1.LabelArchStable] = runtime.GOARCH
	labels[corev1.LabelHostname] = k.cfg.NodeName

	want := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Labels: labels}}
	k.setNodeStatus(want, errNoNetwork)
	node, err := k.client.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		return node, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("register node: %w", err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err = k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := false
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		for key, v := range labels {
			if node.Labels[key] != v {
				node.Labels[key], changed = v, true
			}
		}
		if changed {
			node, err = k.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("register node: %w", err)
	}
	return node, nil
}

func (k *kubelet) updateNodeStatus(ctx context.Context, netErr error) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("node status: %w", err)
		}
		k.setNodeStatus(node, netErr)
		if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node status: %w", err)
		}
		return nil
	})
}

// setNodeStatus fills node.Status as a kubelet reports it; netErr says why the pod
// network is not ready (nil: ready).
func (k *kubelet) setNodeStatus(node *corev1.Node, netErr error) {
	now := metav1.Now()
	st := &node.Status
	st.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.cfg.NodeIP},
		{Type: corev1.NodeHostName, Address: k.cfg.NodeName},
	}
	cpu, mem := machineCapacity()
	st.Capacity = corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(cpu), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	st.Allocatable = st.Capacity.DeepCopy()
	st.NodeInfo = corev1.NodeSystemInfo{
		KernelVersion:           kernelVersion(),
		OSImage:                 fmt.Sprintf("Seine lab node (%s, on a Linux network namespace)", k.cfg.OS),
		ContainerRuntimeVersion: "seine-lab://" + kubeletVersion,
		KubeletVersion:          kubeletVersion,
		OperatingSystem:         k.cfg.OS,
		Architecture:            runtime.GOARCH,
	}

	setCondition(st, corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available", now)
	setCondition(st, corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now)
	setCondition(st, corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available", now)
	if c := findNodeCondition(st, corev1.NodeNetworkUnavailable); c == nil || c.Reason == condNetworkReady || c.Reason == condNetworkNotReady {
		if netErr == nil {
			setCondition(st, corev1.NodeNetworkUnavailable, corev1.ConditionFalse, condNetworkReady, "the pod network is configured", now)
		} else {
			setCondition(st, corev1.NodeNetworkUnavailable, corev1.ConditionTrue, condNetworkNotReady, "the pod network is not configured", now)
		}
	}
	if netErr == nil {
		setCondition(st, corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status", now)
	} else {
		setCondition(st, corev1.NodeReady, corev1.ConditionFalse, "KubeletNotReady", networkNotReadyMessage(netErr), now)
	}
}

// networkNotReadyMessage words it as a kubelet does for a runtime without a network.
func networkNotReadyMessage(err error) string {
	return "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: " + err.Error()
}

func findNodeCondition(st *corev1.NodeStatus, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// setCondition sets a condition's heartbeat to now, and its transition time to now only
// when its status changes.
func setCondition(st *corev1.NodeStatus, t corev1.NodeConditionType, status corev1.ConditionStatus, reason, msg string, now metav1.Time) {
	c := findNodeCondition(st, t)
	if c == nil {
		st.Conditions = append(st.Conditions, corev1.NodeCondition{Type: t})
		c = &st.Conditions[len(st.Conditions)-1]
	}
	if c.Status != status {
		c.LastTransitionTime = now
	}
	c.Status, c.Reason, c.Message, c.LastHeartbeatTime = status, reason, msg, now
}

// renewLease creates or renews the node's Lease in kube-node-lease.
func (k *kubelet) renewLease(ctx context.Context, node *corev1.Node) {
	leases := k.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name:      k.cfg.NodeName,
				Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(k.cfg.NodeName),
				LeaseDurationSeconds: ptr.To[int32](leaseSeconds),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	case err == nil:
		lease.Spec.HolderIdentity = ptr.To(k.cfg.NodeName)
		lease.Spec.LeaseDurationSeconds = ptr.To[int32](leaseSeconds)
		lease.Spec.RenewTime = &now
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil && ctx.Err() == nil {
		k.log.Error("lease renewal failed", "err", err)
	}
}

// templateData is what CNIConfTemplate sees.
type templateData struct {
	PodCIDR  string
	PodCIDRs []string
	NodeName string
	NodeIP   string
}

// renderConfig renders CNIConfTemplate into CNIConfDir once the Node has a podCIDR. It
// reports whether the config is in place.
func (k *kubelet) renderConfig(ctx context.Context) bool {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		k.log.Error("reading node for its podCIDR", "err", err)
		return false
	}
	if node.Spec.PodCIDR == "" {
		return false
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 {
		cidrs = []string{node.Spec.PodCIDR}
	}
	path, err := writeTemplate(k.cfg.CNIConfTemplate, k.cfg.CNIConfDir, templateData{
		PodCIDR: node.Spec.PodCIDR, PodCIDRs: cidrs, NodeName: k.cfg.NodeName, NodeIP: k.cfg.NodeIP,
	})
	if err != nil {
		k.log.Error("rendering CNI config template", "err", err)
		return false
	}
	k.log.Info("CNI config rendered", "file", path, "podCIDR", node.Spec.PodCIDR)
	return true
}

// writeTemplate renders tmpl, checks it is a valid conflist and writes it atomically to
// dir as 10-<network name>.conflist.
func writeTemplate(tmpl, dir string, data templateData) (string, error) {
	t, err := template.New("cni").Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("CNI config template: %w", err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("CNI config template: %w", err)
	}
	list, err := libcni.ConfListFromBytes(buf.Bytes())
	if err != nil {
		return "", fmt.Errorf("rendered CNI config: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("CNI config dir: %w", err)
	}
	path := filepath.Join(dir, "10-"+list.Name+".conflist")
	tmp := path + ".tmp" // ignored by ConfFiles: wrong extension
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("write CNI config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write CNI config: %w", err)
	}
	return path, nil
}
