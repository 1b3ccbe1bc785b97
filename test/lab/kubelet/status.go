package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// writeRunningStatus reports the pod Running and Ready with the sandbox's IPs, unless the
// stored status already says so.
func (k *kubelet) writeRunningStatus(ctx context.Context, pod *corev1.Pod, rec *sandboxRecord) error {
	if runningStatusCurrent(pod, rec, k.cfg.NodeIP) {
		return nil
	}
	return k.updatePodStatus(ctx, pod, func(p *corev1.Pod) { k.setRunning(p, rec) })
}

// writePendingStatus reports the pod Pending and not Ready while its sandbox cannot be
// made. Failure to write is only logged: the sandbox error is what the caller returns.
func (k *kubelet) writePendingStatus(ctx context.Context, pod *corev1.Pod) {
	if pod.Status.Phase == corev1.PodPending && pod.Status.HostIP == k.cfg.NodeIP &&
		conditionStatus(pod, corev1.PodReady) == corev1.ConditionFalse {
		return
	}
	if err := k.updatePodStatus(ctx, pod, k.setPending); err != nil {
		k.log.Error("pod status", "pod", klogRef(pod), "err", err)
	}
}

func (k *kubelet) updatePodStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.Pod)) error {
	pods := k.client.CoreV1().Pods(pod.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return apierrors.NewNotFound(corev1.Resource("pods"), pod.Name) // replaced by a namesake
		}
		mutate(cur)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: the informer brings the deletion
	}
	if err != nil {
		return fmt.Errorf("pod %s status: %w", klogRef(pod), err)
	}
	return nil
}

func runningStatusCurrent(pod *corev1.Pod, rec *sandboxRecord, nodeIP string) bool {
	st := &pod.Status
	if st.Phase != corev1.PodRunning || st.HostIP != nodeIP || len(st.PodIPs) != len(rec.IPs) ||
		len(st.ContainerStatuses) != len(pod.Spec.Containers) ||
		conditionStatus(pod, corev1.PodReady) != corev1.ConditionTrue {
		return false
	}
	for i, ip := range rec.IPs {
		if st.PodIPs[i].IP != ip {
			return false
		}
	}
	return st.PodIP == rec.IPs[0]
}

func conditionStatus(pod *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

func (k *kubelet) setRunning(pod *corev1.Pod, rec *sandboxRecord) {
	st := &pod.Status
	now := metav1.Now()
	started := metav1.NewTime(rec.Created)
	st.Phase = corev1.PodRunning
	st.Reason, st.Message = "", ""
	k.setHostIP(pod)
	st.PodIP = rec.IPs[0]
	st.PodIPs = nil
	for _, ip := range rec.IPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
	}
	if st.StartTime == nil {
		st.StartTime = &started
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodReadyToStartContainers,
		corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		setPodCondition(st, t, corev1.ConditionTrue, "", now)
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: containerRef(rec, c.Name),
			Ready: true, Started: ptr.To(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: started, FinishedAt: started,
			}},
		})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: containerRef(rec, c.Name),
			Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
}

func (k *kubelet) setPending(pod *corev1.Pod) {
	st := &pod.Status
	now := metav1.Now()
	st.Phase = corev1.PodPending
	k.setHostIP(pod)
	st.PodIP, st.PodIPs = "", nil
	setPodCondition(st, corev1.PodScheduled, corev1.ConditionTrue, "", now)
	setPodCondition(st, corev1.PodReadyToStartContainers, corev1.ConditionFalse, "", now)
	setPodCondition(st, corev1.PodInitialized, corev1.ConditionTrue, "", now)
	setPodCondition(st, corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", now)
	setPodCondition(st, corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", now)
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Started: ptr.To(false),
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		})
	}
}

func (k *kubelet) setHostIP(pod *corev1.Pod) {
	pod.Status.HostIP = k.cfg.NodeIP
	pod.Status.HostIPs = []corev1.HostIP{{IP: k.cfg.NodeIP}}
}

// containerRef is a container's ID as the API shows it: runtime://id. The lab runs no
// containers; each gets an ID derived from its sandbox's and its name.
func containerRef(rec *sandboxRecord, name string) string {
	sum := sha256.Sum256([]byte(rec.ContainerID + "/" + name))
	return "seine-lab://" + hex.EncodeToString(sum[:])
}

func setPodCondition(st *corev1.PodStatus, t corev1.PodConditionType, status corev1.ConditionStatus, reason string, now metav1.Time) {
	i := slices.IndexFunc(st.Conditions, func(c corev1.PodCondition) bool { return c.Type == t })
	if i < 0 {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: now})
		return
	}
	c := &st.Conditions[i]
	if c.Status != status {
		c.LastTransitionTime = now
	}
	c.Status, c.Reason = status, reason
	if status == corev1.ConditionTrue {
		c.Message = ""
	}
}
