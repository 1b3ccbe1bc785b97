package kubelet

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Event reasons, as a kubelet records them.
const (
	reasonFailedSandbox   = "FailedCreatePodSandBox"
	reasonNetworkNotReady = "NetworkNotReady"
	reasonFailedListener  = "FailedProbeListener"
)

// syncPod brings one pod's sandbox to what its object asks for.
func (k *kubelet) syncPod(ctx context.Context, uid types.UID) error {
	pod := k.podByUID(uid)
	if pod == nil || pod.DeletionTimestamp != nil {
		if err := k.killPod(ctx, uid); err != nil {
			return err
		}
		if pod != nil {
			return k.deletePodObject(ctx, pod)
		}
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return k.killPod(ctx, uid) // terminal: nothing should run
	}

	sb := k.sandbox(uid)
	switch {
	case sb != nil && sb.stop != nil:
		return k.writeRunningStatus(ctx, pod, sb.rec)
	case sb != nil && k.adoptable(sb.rec):
		k.log.Info("adopting sandbox", "pod", klogRef(pod), "ips", sb.rec.IPs)
		k.serve(pod, sb)
		return k.writeRunningStatus(ctx, pod, sb.rec)
	case sb != nil:
		// Left half-made by a crash, or its namespace is gone: start over, as a runtime
		// replaces a dead sandbox.
		k.log.Info("replacing stale sandbox", "pod", klogRef(pod), "state", sb.rec.State)
		if err := k.killPod(ctx, uid); err != nil {
			return err
		}
	}
	return k.startPod(ctx, pod)
}

func klogRef(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

// adoptable reports whether a sandbox from a previous run can be taken over as it is.
func (k *kubelet) adoptable(rec *sandboxRecord) bool {
	return rec.State == stateRunning && (rec.HostNetwork || k.ops.NetNSExists(rec.NetNS))
}

// startPod creates the sandbox: record, namespace, CNI ADD, listeners, status.
func (k *kubelet) startPod(ctx context.Context, pod *corev1.Pod) error {
	rec := &sandboxRecord{
		UID:         pod.UID,
		Namespace:   pod.Namespace,
		Name:        pod.Name,
		ContainerID: newContainerID(),
		HostNetwork: pod.Spec.HostNetwork,
		State:       stateCreating,
		Created:     time.Now().UTC().Truncate(time.Second),
	}
	if rec.HostNetwork {
		rec.IPs, rec.State = []string{k.cfg.NodeIP}, stateRunning
		if err := k.state.save(rec); err != nil {
			return err
		}
		sb := &sandbox{rec: rec}
		k.setSandbox(sb)
		k.serve(pod, sb)
		return k.writeRunningStatus(ctx, pod, rec)
	}

	list, err := k.loadNetwork()
	if err != nil {
		k.recorder.Eventf(pod, corev1.EventTypeWarning, reasonNetworkNotReady,
			"network is not ready: %s", networkNotReadyMessage(err))
		k.writePendingStatus(ctx, pod)
		return fmt.Errorf("start pod %s: %w", klogRef(pod), err)
	}
	rec.NetNS = filepath.Join(k.cfg.NetNSDir, string(pod.UID))
	rec.Network = list.Name
	if err := k.state.save(rec); err != nil {
		return err
	}
	sb := &sandbox{rec: rec}
	k.setSandbox(sb)

	err = k.ops.CreateNetNS(rec.NetNS)
	if err == nil {
		var ips []string
		if ips, err = k.cniAdd(ctx, list, rec, pod); err == nil {
			rec.IPs, rec.State = ips, stateRunning
			err = k.state.save(rec)
		}
	}
	if err != nil {
		err = fmt.Errorf("failed to setup network for sandbox %q: %w", rec.ContainerID, err)
		k.recorder.Eventf(pod, corev1.EventTypeWarning, reasonFailedSandbox, "Failed to create pod sandbox: %v", err)
		// Undo whatever ADD did, as a runtime does before retrying with a new sandbox.
		if kerr := k.killPod(ctx, pod.UID); kerr != nil {
			k.log.Error("cleaning up failed sandbox", "pod", klogRef(pod), "err", kerr)
		}
		k.writePendingStatus(ctx, pod)
		return fmt.Errorf("start pod %s: %w", klogRef(pod), err)
	}
	k.log.Info("sandbox created", "pod", klogRef(pod), "ips", rec.IPs, "netns", rec.NetNS)
	k.serve(pod, sb)
	return k.writeRunningStatus(ctx, pod, rec)
}

// serve starts the probe listeners standing in for the pod's containers.
func (k *kubelet) serve(pod *corev1.Pod, sb *sandbox) {
	nsPath := sb.rec.NetNS
	if sb.rec.HostNetwork {
		nsPath = k.cfg.NodeNetNS
	}
	stop, err := k.ops.Serve(k.listenCtx, nsPath, pod.Name, podPorts(pod))
	if err != nil {
		k.log.Warn("probe listeners", "pod", klogRef(pod), "err", err)
		k.recorder.Eventf(pod, corev1.EventTypeWarning, reasonFailedListener, "Probe listeners: %v", err)
	}
	k.mu.Lock()
	sb.stop = stop
	k.mu.Unlock()
}

// killPod tears a sandbox down: listeners, CNI DEL, namespace, record. Without a
// sandbox it does nothing; on a DEL failure it keeps the record so the caller retries.
func (k *kubelet) killPod(ctx context.Context, uid types.UID) error {
	sb := k.sandbox(uid)
	if sb == nil {
		return nil
	}
	k.mu.Lock()
	stop := sb.stop
	sb.stop = nil
	k.mu.Unlock()
	if stop != nil {
		stop()
	}
	rec := sb.rec
	ref := rec.Namespace + "/" + rec.Name
	if !rec.HostNetwork {
		if err := k.cniDel(ctx, rec); err != nil {
			return fmt.Errorf("stop pod %s: failed to destroy network for sandbox %q: %w", ref, rec.ContainerID, err)
		}
		if err := k.ops.RemoveNetNS(rec.NetNS); err != nil {
			return fmt.Errorf("stop pod %s: %w", ref, err)
		}
	}
	if err := k.state.remove(uid); err != nil {
		return err
	}
	k.dropSandbox(uid)
	k.log.Info("sandbox removed", "pod", ref, "containerID", rec.ContainerID)
	return nil
}

// deletePodObject finishes a graceful deletion as kubelet's status manager does: delete
// with grace period 0 and a UID precondition, so a new pod of the same name is safe.
func (k *kubelet) deletePodObject(ctx context.Context, pod *corev1.Pod) error {
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete pod %s: %w", klogRef(pod), err)
	}
	k.log.Info("pod deleted", "pod", klogRef(pod))
	return nil
}
