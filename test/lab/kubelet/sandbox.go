package kubelet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/lab/probe"
)

// sandboxOps is what a pod sandbox needs from the host: namespaces and the processes
// standing in for containers. Unit tests replace it with a recording fake.
type sandboxOps interface {
	CreateNetNS(path string) error
	RemoveNetNS(path string) error
	NetNSExists(path string) bool
	Serve(ctx context.Context, netnsPath, podName string, ports []corev1.ContainerPort) (stop func(), err error)
}

type realOps struct{}

func (realOps) CreateNetNS(path string) error { return netns.Create(path) }
func (realOps) RemoveNetNS(path string) error { return netns.Remove(path) }
func (realOps) NetNSExists(path string) bool  { return netns.Exists(path) }
func (realOps) Serve(ctx context.Context, nsPath, podName string, ports []corev1.ContainerPort) (func(), error) {
	return probe.Serve(ctx, nsPath, podName, ports)
}

// sandbox is a pod's sandbox as this run knows it.
type sandbox struct {
	rec  *sandboxRecord
	stop func() // probe listeners; nil while not serving
}

func (k *kubelet) loadSandboxes() error {
	recs, err := k.state.all()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, rec := range recs {
		k.sandboxes[rec.UID] = &sandbox{rec: rec}
	}
	return nil
}

func (k *kubelet) sandbox(uid types.UID) *sandbox {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sandboxes[uid]
}

func (k *kubelet) setSandbox(sb *sandbox) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sandboxes[sb.rec.UID] = sb
}

func (k *kubelet) dropSandbox(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.sandboxes, uid)
}

func (k *kubelet) sandboxUIDs() []types.UID {
	k.mu.Lock()
	defer k.mu.Unlock()
	uids := make([]types.UID, 0, len(k.sandboxes))
	for uid := range k.sandboxes {
		uids = append(uids, uid)
	}
	slices.Sort(uids)
	return uids
}

func (k *kubelet) stopAllListeners() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, sb := range k.sandboxes {
		if sb.stop != nil {
			sb.stop()
			sb.stop = nil
		}
	}
}

// newContainerID returns a sandbox ID shaped like a runtime's: 64 hex digits.
func newContainerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// podPorts lists the container ports the probe listeners serve.
func podPorts(pod *corev1.Pod) []corev1.ContainerPort {
	var ports []corev1.ContainerPort
	for _, c := range pod.Spec.Containers {
		ports = append(ports, c.Ports...)
	}
	return ports
}
