package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodeRegistrationStatusAndLease(t *testing.T) {
	h := newHarness(t)
	h.cfg.OS = "windows" // a Linux netns posing as a Windows node
	h.writeConf(h.netConf(nil))
	h.start()
	ctx := context.Background()

	var node *corev1.Node
	eventually(t, "node Ready", func() (bool, string) {
		var err error
		node, err = h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		c := findNodeCondition(&node.Status, corev1.NodeReady)
		return c != nil && c.Status == corev1.ConditionTrue, fmt.Sprintf("%+v", c)
	})
	for k, v := range map[string]string{
		"kubernetes.io/os": "windows", "kubernetes.io/arch": runtime.GOARCH,
		"kubernetes.io/hostname": "node-1", "lab.seine.io/role": "worker",
	} {
		if node.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, node.Labels[k], v)
		}
	}
	wantAddr := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.50.11"}, {Type: corev1.NodeHostName, Address: "node-1"}}
	if fmt.Sprint(node.Status.Addresses) != fmt.Sprint(wantAddr) {
		t.Errorf("addresses %v, want %v", node.Status.Addresses, wantAddr)
	}
	if pods := node.Status.Allocatable.Pods(); pods.Value() != 110 {
		t.Errorf("allocatable pods %v", pods)
	}
	if node.Status.Capacity.Cpu().IsZero() || node.Status.Capacity.Memory().IsZero() {
		t.Errorf("capacity %v", node.Status.Capacity)
	}
	if node.Status.NodeInfo.OperatingSystem != "windows" || node.Status.NodeInfo.Architecture != runtime.GOARCH {
		t.Errorf("nodeInfo %+v", node.Status.NodeInfo)
	}
	for _, ct := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeNetworkUnavailable} {
		if c := findNodeCondition(&node.Status, ct); c == nil || c.Status != corev1.ConditionFalse {
			t.Errorf("condition %s = %+v, want False", ct, c)
		}
	}

	var first *metav1.MicroTime
	eventually(t, "lease renewed", func() (bool, string) {
		lease, err := h.client.CoordinationV1().Leases("kube-node-lease").Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if *lease.Spec.HolderIdentity != "node-1" || *lease.Spec.LeaseDurationSeconds != 40 ||
			len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].Kind != "Node" {
			t.Fatalf("lease %+v", lease)
		}
		if first == nil {
			first = lease.Spec.RenewTime
			return false, "first renewal seen"
		}
		return lease.Spec.RenewTime.After(first.Time), "renewTime unchanged"
	})
}

func TestPodLifecycle(t *testing.T) {
	h := newHarness(t)
	h.writeConf(h.netConf(nil))
	h.createPod("pod-a")
	h.createPod("pod-b", func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "lab/init"}}
	})
	h.createPod("pod-h", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	h.createPod("pod-x", func(p *corev1.Pod) { p.Spec.NodeName = "node-2" })
	h.start()

	a := h.waitRunning("pod-a")
	if a.Status.PodIP != "10.9.0.5" || len(a.Status.PodIPs) != 1 || a.Status.PodIPs[0].IP != "10.9.0.5" {
		t.Errorf("pod-a IPs %q %v", a.Status.PodIP, a.Status.PodIPs)
	}
	if a.Status.HostIP != "192.168.50.11" || a.Status.StartTime == nil {
		t.Errorf("pod-a hostIP %q startTime %v", a.Status.HostIP, a.Status.StartTime)
	}
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if conditionStatus(a, ct) != corev1.ConditionTrue {
			t.Errorf("pod-a condition %s not True", ct)
		}
	}
	if cs := a.Status.ContainerStatuses; len(cs) != 1 || !cs[0].Ready || cs[0].State.Running == nil || cs[0].Name != "app" {
		t.Errorf("pod-a container statuses %+v", cs)
	}
	b := h.waitRunning("pod-b")
	if b.Status.PodIP != "10.9.0.6" || len(b.Status.InitContainerStatuses) != 1 ||
		b.Status.InitContainerStatuses[0].State.Terminated == nil {
		t.Errorf("pod-b status %+v", b.Status)
	}
	hn := h.waitRunning("pod-h")
	if hn.Status.PodIP != "192.168.50.11" {
		t.Errorf("hostNetwork pod IP %q, want the node IP", hn.Status.PodIP)
	}

	// The runtime's side of ADD, as the plugin saw it.
	adds := h.callsFor("ADD", "pod-a")
	if len(adds) != 1 {
		t.Fatalf("pod-a ADDs: %+v", adds)
	}
	add := adds[0]
	if add.NetNS != h.netnsPath("pod-a") || add.IfName != "eth0" || len(add.ContainerID) != 64 {
		t.Errorf("ADD netns=%q ifname=%q containerID=%q", add.NetNS, add.IfName, add.ContainerID)
	}
	for k, v := range map[string]string{
		"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "pod-a",
		"K8S_POD_UID": "uid-pod-a", "K8S_POD_INFRA_CONTAINER_ID": add.ContainerID,
	} {
		if add.Args[k] != v {
			t.Errorf("CNI_ARGS %s = %q, want %q", k, add.Args[k], v)
		}
	}
	if n := len(h.callsFor("ADD", "pod-h")); n != 0 {
		t.Errorf("hostNetwork pod got %d CNI ADDs", n)
	}
	if n := len(h.callsFor("ADD", "pod-x")); n != 0 {
		t.Errorf("another node's pod got %d CNI ADDs", n)
	}
	if x, _ := h.getPod("pod-x"); x.Status.Phase != corev1.PodPending {
		t.Errorf("another node's pod status was written: %+v", x.Status)
	}

	// Listeners: in the pod namespace, or the node's for hostNetwork.
	serving, serves := h.ops.snapshot()
	for _, s := range serves {
		switch s.Pod {
		case "pod-a":
			if s.NetNS != h.netnsPath("pod-a") || len(s.Ports) != 2 {
				t.Errorf("pod-a served %+v", s)
			}
		case "pod-h":
			if s.NetNS != "" {
				t.Errorf("hostNetwork pod served in %q", s.NetNS)
			}
		}
	}
	if serving["pod-a"] != 1 || serving["pod-b"] != 1 || serving["pod-h"] != 1 {
		t.Errorf("listeners running: %v", serving)
	}

	// CHECK with the cached result.
	if err := Check(context.Background(), h.cfg, "uid-pod-a"); err != nil {
		t.Errorf("Check: %v", err)
	}
	if checks := h.callsFor("CHECK", "pod-a"); len(checks) != 1 || !checks[0].HasPrevResult || checks[0].ContainerID != add.ContainerID {
		t.Errorf("CHECK calls %+v", checks)
	}
	if err := Check(context.Background(), h.cfg, "uid-nope"); err == nil {
		t.Error("Check of an unknown pod succeeded")
	}

	// Graceful deletion: teardown, then the object is deleted.
	h.markDeleted("pod-a")
	h.markDeleted("pod-h")
	for _, name := range []string{"pod-a", "pod-h"} {
		eventually(t, name+" deleted", func() (bool, string) {
			_, err := h.getPod(name)
			return err != nil, "still there"
		})
	}
	dels := h.callsFor("DEL", "pod-a")
	if len(dels) != 1 || dels[0].ContainerID != add.ContainerID || dels[0].NetNS != add.NetNS {
		t.Errorf("pod-a DELs %+v", dels)
	}
	if _, err := os.Stat(h.netnsPath("pod-a")); !os.IsNotExist(err) {
		t.Errorf("pod-a netns left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, "pods", "uid-pod-a.json")); !os.IsNotExist(err) {
		t.Errorf("pod-a record left behind: %v", err)
	}
	serving, _ = h.ops.snapshot()
	if serving["pod-a"] != 0 || serving["pod-h"] != 0 || serving["pod-b"] != 1 {
		t.Errorf("listeners after deletion: %v", serving)
	}

	// A pod that vanishes without a graceful deletion (force delete) is torn down too.
	if err := h.client.CoreV1().Pods("default").Delete(context.Background(), "pod-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod-b torn down", func() (bool, string) {
		_, err := os.Stat(h.netnsPath("pod-b"))
		return os.IsNotExist(err) && len(h.callsFor("DEL", "pod-b")) == 1, "netns or DEL missing"
	})
}

func TestAddFailureRecordsEventAndRetries(t *testing.T) {
	h := newHarness(t)
	h.writeConf(h.netConf(func(c *fakeConf) { c.FailAdd = []string{"pod-a"} }))
	h.createPod("pod-a")
	h.start()

	eventually(t, "FailedCreatePodSandBox event", func() (bool, string) {
		evs := h.events("pod-a", "FailedCreatePodSandBox")
		if len(evs) == 0 {
			return false, "no event"
		}
		e := evs[0]
		if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "no IP addresses available") ||
			e.Source.Component != "kubelet" || e.Source.Host != "node-1" {
			t.Fatalf("event %+v", e)
		}
		return true, ""
	})
	eventually(t, "ADD retried", func() (bool, string) {
		n := len(h.callsFor("ADD", "pod-a"))
		return n >= 3, fmt.Sprintf("%d ADDs", n)
	})
	// Stop between attempts: every failed attempt was undone with DEL, no namespace is
	// left, the pod waits.
	h.stop()
	if adds, dels := h.callsFor("ADD", "pod-a"), h.callsFor("DEL", "pod-a"); len(dels) != len(adds) {
		t.Errorf("%d failed ADDs but %d DELs", len(adds), len(dels))
	}
	pod, err := h.getPod("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase != corev1.PodPending || conditionStatus(pod, corev1.PodReady) != corev1.ConditionFalse ||
		pod.Status.PodIP != "" {
		t.Errorf("status after failures: %+v", pod.Status)
	}
	if _, err := os.Stat(h.netnsPath("pod-a")); !os.IsNotExist(err) {
		t.Errorf("netns left after a failed ADD: %v", err)
	}
	if serving, _ := h.ops.snapshot(); serving["pod-a"] != 0 {
		t.Errorf("listeners started for a pod without a network")
	}

	// The network recovers: the next attempt succeeds.
	h.writeConf(h.netConf(nil))
	h.start()
	pod = h.waitRunning("pod-a")
	if pod.Status.PodIP != "10.9.0.5" {
		t.Errorf("pod IP %q", pod.Status.PodIP)
	}
	adds, dels := h.callsFor("ADD", "pod-a"), h.callsFor("DEL", "pod-a")
	if len(dels) != len(adds)-1 {
		t.Errorf("%d ADDs but %d DELs: every failed ADD must be undone", len(adds), len(dels))
	}
}

func TestDeleteRetriesFailedDEL(t *testing.T) {
	h := newHarness(t)
	failFile := filepath.Join(h.dir, "fail-del")
	h.writeConf(h.netConf(func(c *fakeConf) { c.FailDelWhileExists = failFile }))
	h.createPod("pod-a")
	h.start()
	h.waitRunning("pod-a")

	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.markDeleted("pod-a")
	eventually(t, "DEL retried", func() (bool, string) {
		n := len(h.callsFor("DEL", "pod-a"))
		return n >= 3, fmt.Sprintf("%d DELs", n)
	})
	if _, err := h.getPod("pod-a"); err != nil {
		t.Fatalf("pod deleted although DEL keeps failing: %v", err)
	}
	if _, err := os.Stat(h.netnsPath("pod-a")); err != nil {
		t.Fatalf("netns removed before DEL succeeded: %v", err)
	}

	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod deleted", func() (bool, string) {
		_, err := h.getPod("pod-a")
		return err != nil, "still there"
	})
	if _, err := os.Stat(h.netnsPath("pod-a")); !os.IsNotExist(err) {
		t.Errorf("netns left behind: %v", err)
	}
}

func TestRestartAdoptsAndReaps(t *testing.T) {
	h := newHarness(t)
	h.writeConf(h.netConf(nil))
	h.createPod("pod-a")
	h.createPod("pod-b")
	h.start()
	h.waitRunning("pod-a")
	h.waitRunning("pod-b")
	h.stop()

	serving, _ := h.ops.snapshot()
	if serving["pod-a"] != 0 || serving["pod-b"] != 0 {
		t.Fatalf("listeners survive Run: %v", serving)
	}
	// While the kubelet is down, pod-b is force-deleted, and a crash is simulated for a
	// third pod: its record says ADD was under way.
	if err := h.client.CoreV1().Pods("default").Delete(context.Background(), "pod-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c := h.createPod("pod-c")
	st, err := openState(h.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	crashed := &sandboxRecord{UID: c.UID, Namespace: "default", Name: "pod-c", ContainerID: newContainerID(),
		NetNS: h.netnsPath("pod-c"), Network: "fakenet", State: stateCreating}
	if err := st.save(crashed); err != nil {
		t.Fatal(err)
	}
	if err := h.ops.CreateNetNS(crashed.NetNS); err != nil {
		t.Fatal(err)
	}

	h.start()
	eventually(t, "pod-a listeners restarted", func() (bool, string) {
		serving, _ := h.ops.snapshot()
		return serving["pod-a"] == 1, fmt.Sprint(serving)
	})
	eventually(t, "pod-b reaped", func() (bool, string) {
		_, err := os.Stat(h.netnsPath("pod-b"))
		return os.IsNotExist(err) && len(h.callsFor("DEL", "pod-b")) == 1, "netns or DEL missing"
	})
	h.waitRunning("pod-c")
	if n := len(h.callsFor("ADD", "pod-a")); n != 1 {
		t.Errorf("pod-a got %d ADDs; adoption must not ADD again", n)
	}
	if n := len(h.callsFor("DEL", "pod-a")); n != 0 {
		t.Errorf("pod-a got %d DELs", n)
	}
	cDels := h.callsFor("DEL", "pod-c")
	if len(cDels) != 1 || cDels[0].ContainerID != crashed.ContainerID {
		t.Errorf("the crashed sandbox was not DELeted first: %+v", cDels)
	}
	if adds := h.callsFor("ADD", "pod-c"); len(adds) != 1 || adds[0].ContainerID == crashed.ContainerID {
		t.Errorf("pod-c ADDs %+v", adds)
	}
	h.stop()

	// Cleanup tears down what is left without the API.
	if err := Cleanup(context.Background(), Config{
		NodeName: h.cfg.NodeName, NodeIP: h.cfg.NodeIP, OS: "linux", CNIBinDirs: h.cfg.CNIBinDirs,
		CNIConfDir: h.cfg.CNIConfDir, NetNSDir: h.cfg.NetNSDir, StateDir: h.cfg.StateDir, ops: h.ops,
	}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(h.cfg.NetNSDir)
	recs, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, "pods"))
	if len(entries) != 0 || len(recs) != 0 {
		t.Errorf("after Cleanup: netns %v, records %v", entries, recs)
	}
}

func TestTemplateAndNetworkReadiness(t *testing.T) {
	h := newHarness(t)
	statusFail := filepath.Join(h.dir, "fail-status")
	h.cfg.CNIConfTemplate = `{"cniVersion":"1.1.0","name":"tmplnet","plugins":[{"type":"fakecni",` +
		`"logFile":"` + h.logFile + `","failStatusWhileExists":"` + statusFail + `",` +
		`"subnet":"{{.PodCIDR}}","ranges":{{json .PodCIDRs}},"node":"{{.NodeName}}","nodeIP":"{{.NodeIP}}"}]}`
	h.createPod("pod-a")
	h.start()
	ctx := context.Background()

	nodeReady := func() (*corev1.Node, *corev1.NodeCondition) {
		node, err := h.client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			return nil, nil
		}
		return node, findNodeCondition(&node.Status, corev1.NodeReady)
	}
	eventually(t, "node NotReady without a CNI config", func() (bool, string) {
		_, c := nodeReady()
		return c != nil && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "NetworkPluginNotReady"), fmt.Sprintf("%+v", c)
	})
	eventually(t, "NetworkNotReady event", func() (bool, string) {
		return len(h.events("pod-a", "NetworkNotReady")) > 0, "none"
	})

	// A STATUS failure (CNI 1.1) keeps the node NotReady once the config exists.
	if err := os.WriteFile(statusFail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	node, _ := nodeReady()
	node.Spec.PodCIDR, node.Spec.PodCIDRs = "10.9.0.0/24", []string{"10.9.0.0/24", "fd00:9::/64"}
	if _, err := h.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rendered := filepath.Join(h.cfg.CNIConfDir, "10-tmplnet.conflist")
	eventually(t, "config rendered", func() (bool, string) {
		_, err := os.ReadFile(rendered)
		return err == nil, fmt.Sprint(err)
	})
	b, _ := os.ReadFile(rendered)
	for _, want := range []string{`"subnet":"10.9.0.0/24"`, `"ranges":["10.9.0.0/24","fd00:9::/64"]`, `"node":"node-1"`, `"nodeIP":"192.168.50.11"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("rendered config lacks %s: %s", want, b)
		}
	}
	eventually(t, "STATUS called", func() (bool, string) {
		for _, c := range h.calls() {
			if c.Command == "STATUS" {
				return true, ""
			}
		}
		return false, "no STATUS"
	})
	if _, c := nodeReady(); c == nil || c.Status != corev1.ConditionFalse {
		t.Fatalf("node Ready while STATUS fails: %+v", c)
	}

	if err := os.Remove(statusFail); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node Ready", func() (bool, string) {
		_, c := nodeReady()
		return c != nil && c.Status == corev1.ConditionTrue, fmt.Sprintf("%+v", c)
	})
	h.waitRunning("pod-a")
}

func TestUnservablePortRecordsEvent(t *testing.T) {
	h := newHarness(t)
	h.writeConf(h.netConf(nil))
	h.createPod("pod-a", func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports,
			corev1.ContainerPort{ContainerPort: 9999, Protocol: corev1.ProtocolSCTP})
	})
	h.start()
	h.waitRunning("pod-a") // the other ports are served: the pod runs
	eventually(t, "FailedProbeListener event", func() (bool, string) {
		for _, e := range h.events("pod-a", "FailedProbeListener") {
			return strings.Contains(e.Message, "sctp"), e.Message
		}
		return false, "no event"
	})
}

func TestConfigValidation(t *testing.T) {
	err := Run(context.Background(), Config{NodeName: "n", NodeIP: "not-an-ip", OS: "plan9"})
	if err == nil {
		t.Fatal("Run accepted an invalid config")
	}
	for _, want := range []string{"NodeIP", "OS", "Client", "CNIBinDirs", "StateDir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
