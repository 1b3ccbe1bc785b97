package kubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/seine-cni/seine/test/lab/probe"
)

func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" { // exec'd by libcni as the fakecni plugin
		os.Exit(fakePlugin())
	}
	os.Exit(m.Run())
}

// fakeOps stands in for namespaces (plain files) and probe listeners (recorded).
type fakeOps struct {
	mu      sync.Mutex
	serving map[string]int // pod name -> listener sets running
	serves  []serveCall
}

type serveCall struct {
	NetNS, Pod string
	Ports      []corev1.ContainerPort
}

func (f *fakeOps) CreateNetNS(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	return file.Close()
}

func (f *fakeOps) RemoveNetNS(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (f *fakeOps) NetNSExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (f *fakeOps) Serve(_ context.Context, nsPath, pod string, ports []corev1.ContainerPort) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.serving == nil {
		f.serving = map[string]int{}
	}
	f.serving[pod]++
	f.serves = append(f.serves, serveCall{NetNS: nsPath, Pod: pod, Ports: ports})
	var errs []error
	for _, p := range ports {
		if p.Protocol == corev1.ProtocolSCTP { // as on this machine's kernel
			errs = append(errs, fmt.Errorf("listen SCTP/%d: %w", p.ContainerPort, probe.ErrSCTPUnsupported))
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.serving[pod]--
		})
	}, errors.Join(errs...)
}

func (f *fakeOps) snapshot() (serving map[string]int, serves []serveCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	serving = map[string]int{}
	for k, v := range f.serving {
		serving[k] = v
	}
	return serving, append([]serveCall(nil), f.serves...)
}

// harness runs one kubelet against a fake clientset with the fakecni plugin.
type harness struct {
	t       testing.TB
	dir     string
	client  *fake.Clientset
	ops     *fakeOps
	cfg     Config
	logFile string
	cancel  context.CancelFunc
	done    chan error
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "fakecni")); err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:       t,
		dir:     dir,
		client:  fake.NewClientset(),
		ops:     &fakeOps{},
		logFile: filepath.Join(dir, "cni-calls.jsonl"),
	}
	h.cfg = Config{
		NodeName:   "node-1",
		NodeIP:     "192.168.50.11",
		OS:         "linux",
		Labels:     map[string]string{"lab.seine.io/role": "worker"},
		Client:     h.client,
		CNIBinDirs: []string{bin},
		CNIConfDir: filepath.Join(dir, "net.d"),
		NetNSDir:   filepath.Join(dir, "netns"),
		StateDir:   filepath.Join(dir, "state"),
		Logger:     testLogger(t),
		ops:        h.ops,
		timing: timing{
			configPoll:   20 * time.Millisecond,
			statusReport: 200 * time.Millisecond,
			leaseRenew:   50 * time.Millisecond,
			retryBase:    20 * time.Millisecond,
			retryMax:     200 * time.Millisecond,
		},
	}
	return h
}

// netConf is a fakecni conflist; mutate adjusts the plugin's part.
func (h *harness) netConf(mutate func(*fakeConf)) fakeConf {
	c := fakeConf{
		CNIVersion: "1.0.0", Name: "fakenet", Type: "fakecni", LogFile: h.logFile,
		IPs: map[string]string{"pod-a": "10.9.0.5/24", "pod-b": "10.9.0.6/24"},
	}
	if mutate != nil {
		mutate(&c)
	}
	return c
}

func (h *harness) writeConf(c fakeConf) {
	h.t.Helper()
	plugin, err := json.Marshal(c)
	if err != nil {
		h.t.Fatal(err)
	}
	list := `{"cniVersion":"` + c.CNIVersion + `","name":"` + c.Name + `","plugins":[` + string(plugin) + `]}`
	if err := os.MkdirAll(h.cfg.CNIConfDir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.cfg.CNIConfDir, "10-fake.conflist"), []byte(list), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// start runs the kubelet until the test ends or stop is called.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- Run(ctx, h.cfg) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	h.cancel = nil
}

func (h *harness) calls() []fakeCall {
	h.t.Helper()
	f, err := os.Open(h.logFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	var calls []fakeCall
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c fakeCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			h.t.Fatalf("call log: %v", err)
		}
		calls = append(calls, c)
	}
	return calls
}

// callsFor returns the recorded calls of one command for one pod.
func (h *harness) callsFor(cmd, pod string) []fakeCall {
	var out []fakeCall
	for _, c := range h.calls() {
		if c.Command == cmd && c.Args["K8S_POD_NAME"] == pod {
			out = append(out, c)
		}
	}
	return out
}

func (h *harness) createPod(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	h.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{
			NodeName: h.cfg.NodeName,
			Containers: []corev1.Container{{
				Name: "app", Image: "lab/probe",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 5353, Protocol: corev1.ProtocolUDP}},
			}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	for _, m := range mutate {
		m(pod)
	}
	pod, err := h.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return pod
}

func (h *harness) getPod(name string) (*corev1.Pod, error) {
	return h.client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
}

// markDeleted does what the apiserver does on a graceful delete: set deletionTimestamp.
func (h *harness) markDeleted(name string) {
	h.t.Helper()
	pod, err := h.getPod(name)
	if err != nil {
		h.t.Fatal(err)
	}
	now := metav1.Now()
	pod.DeletionTimestamp = &now
	pod.DeletionGracePeriodSeconds = ptr.To[int64](30)
	if _, err := h.client.CoreV1().Pods("default").Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) events(pod, reason string) []corev1.Event {
	h.t.Helper()
	list, err := h.client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == pod && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func (h *harness) netnsPath(pod string) string {
	return filepath.Join(h.cfg.NetNSDir, "uid-"+pod)
}

// eventually polls cond until it holds, failing the test after a generous deadline with
// cond's last explanation.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func podReady(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodRunning && conditionStatus(pod, corev1.PodReady) == corev1.ConditionTrue
}

// waitRunning waits for the pod to be reported Running and Ready and returns it.
func (h *harness) waitRunning(name string) *corev1.Pod {
	h.t.Helper()
	var pod *corev1.Pod
	eventually(h.t, name+" running", func() (bool, string) {
		var err error
		pod, err = h.getPod(name)
		if err != nil {
			return false, err.Error()
		}
		return podReady(pod), string(pod.Status.Phase)
	})
	return pod
}

// testLogger logs through t until the test ends, then drops (client-go goroutines may
// still log while shutting down).
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
