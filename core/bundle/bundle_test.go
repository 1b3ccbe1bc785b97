package bundle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/platform"
)

type entry struct{ name, body string }

func unpack(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	if err := Unpack(bytes.NewReader(b), func(name string, body []byte) error {
		out = append(out, entry{name, string(body)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

type fakeDiag struct{ err error }

func (d fakeDiag) Collect(_ context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== links ==\nlo up")
	return d.err
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "seine-agent.yaml")
	os.WriteFile(cfg, []byte("nodeName: n1\n"), 0o644)
	logPath := filepath.Join(dir, "agent.log")
	os.WriteFile(logPath, []byte("line1\nline2\nline3\n"), 0o644)
	sources := []Source{
		File("agent/seine-agent.yaml", cfg),
		Tail("agent/seine-agent.log", logPath, 6),
		File("agent/missing.yaml", filepath.Join(dir, "missing")),
		Diagnostics("host/diagnostics.txt", fakeDiag{err: errors.New("routes: netlink busy")}, nil),
		Diagnostics("host/none.txt", nil, platform.NotSupported("windows diagnostics")),
		{Name: "slow.txt", Collect: func(ctx context.Context, w io.Writer) error {
			<-ctx.Done()
			return ctx.Err()
		}},
		{Name: "panics.txt", Collect: func(context.Context, io.Writer) error { panic("boom") }},
	}
	var buf bytes.Buffer
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	collectErr, err := Write(context.Background(), &buf, sources, Options{SourceTimeout: 50 * time.Millisecond, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"agent/missing.yaml", "routes: netlink busy", "not supported", "slow.txt: context deadline exceeded", "panic: boom"} {
		if collectErr == nil || !strings.Contains(collectErr.Error(), want) {
			t.Errorf("collect error %v lacks %q", collectErr, want)
		}
	}
	if !errors.Is(collectErr, platform.ErrNotSupported) {
		t.Error("the collect error does not wrap ErrNotSupported")
	}
	files := unpack(t, buf.Bytes())
	var names []string
	got := map[string]string{}
	for _, f := range files {
		names = append(names, f.name)
		got[f.name] = f.body
	}
	want := []string{SummaryFile, "agent/seine-agent.yaml", "agent/seine-agent.log", "agent/missing.yaml", "host/diagnostics.txt", "host/none.txt", "slow.txt", "panics.txt"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("files %v, want %v", names, want)
	}
	if got["agent/seine-agent.yaml"] != "nodeName: n1\n" {
		t.Errorf("config copy %q", got["agent/seine-agent.yaml"])
	}
	if log := got["agent/seine-agent.log"]; log != "[... first 12 bytes cut]\nline3\n" {
		t.Errorf("log tail %q", log)
	}
	// A failing source keeps what it wrote before the error.
	if d := got["host/diagnostics.txt"]; !strings.Contains(d, "lo up") || !strings.Contains(d, "error: routes: netlink busy") {
		t.Errorf("diagnostics: %q", d)
	}
	summary := got[SummaryFile]
	for _, line := range []string{
		"Seine support bundle, 2026-11-26T08:00:00Z",
		"OK    agent/seine-agent.yaml       13 bytes",
		"FAIL  agent/missing.yaml",
		"FAIL  panics.txt                   panic: boom",
	} {
		if !strings.Contains(summary, line) {
			t.Errorf("summary lacks %q:\n%s", line, summary)
		}
	}
}

func TestWriteReportsWriterErrors(t *testing.T) {
	_, err := Write(context.Background(), failingWriter{}, []Source{File("x", "/dev/null")}, Options{})
	if err == nil || !strings.Contains(err.Error(), "write bundle") {
		t.Errorf("got %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestKube(t *testing.T) {
	cs := fake.NewClientset(
		&corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{corev1.LabelOSStable: "linux"}},
			Spec:       corev1.NodeSpec{PodCIDRs: []string{"10.244.1.0/24"}},
			Status: corev1.NodeStatus{
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.11"}},
			},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "seine-agent-x1", Namespace: "kube-system", Labels: map[string]string{"app": "seine"}},
			Spec:       corev1.PodSpec{NodeName: "node-1"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{RestartCount: 2}}},
		},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"}},
	)
	var buf bytes.Buffer
	if err := Kube("kube", cs, "kube-system").Collect(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	// The fake's server version is client-go's placeholder.
	server, rest, _ := strings.Cut(buf.String(), "\n")
	if !strings.HasPrefix(server, "server: v") {
		t.Errorf("server line %q", server)
	}
	want := `
NODE    READY  OS     POD CIDRS        INTERNAL IP
node-1  True   linux  [10.244.1.0/24]  172.30.0.11

POD                         NODE    PHASE    RESTARTS
kube-system/seine-agent-x1  node-1  Running  2
`
	if got := rest; got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestAgentPodLog(t *testing.T) {
	agentPod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", Labels: map[string]string{"app": "seine", "component": "seine-agent"}},
			Spec:       corev1.PodSpec{NodeName: node},
		}
	}
	cs := fake.NewClientset(agentPod("seine-agent-a", "node-1"), agentPod("seine-agent-b", "node-2"))
	var buf bytes.Buffer
	if err := AgentPodLog("log", cs, "kube-system", "node-2", 100).Collect(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	// client-go's fake serves "fake logs" for any pod.
	if want := "# kube-system/seine-agent-b, container seine-agent, last 100 lines\nfake logs"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
	err := AgentPodLog("log", cs, "kube-system", "node-3", 100).Collect(context.Background(), &buf)
	if err == nil || !strings.Contains(err.Error(), "no seine-agent pod on node node-3") {
		t.Errorf("node without an agent: %v", err)
	}
}
