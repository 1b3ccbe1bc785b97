package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/supportbundle"
)

// TestSupportBundle: `seinectl supportbundle` against the lab's three
// nodes, as the serviceaccount seine.yml makes for it; each node's part
// checked (agent config and log, OVS database and flows, host
// diagnostics, profiles, agent info), the cluster's objects and the
// controller's part; secrets planted in a ConfigMap and the lab's own
// (the agents' token, the CA's and the service account signing keys)
// nowhere in the archive. An agent and the controller refuse a request
// without a token, with a wrong token and with a token without the right. Then one agent
// stopped: reported in the archive and on stderr, the other nodes whole.
func TestSupportBundle(t *testing.T) {
	e := upLab(t, "encap", "geneve")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	relays, err := e.c.StartAgentRelays(log)
	if err != nil {
		t.Fatal(err)
	}
	defer relays.Stop()
	nodes := e.c.NodeList()
	pods := e.deploy("bundle-probe", 3)

	// Secrets planted where a bundle looks: one of Seine's ConfigMaps.
	const plantedToken = "PLANTEDe2etokenInAConfigMap0123456789"
	plantedKey := "MHcCAQEEIPLANTEDe2ePrivateKeyMaterial0000000000"
	plantedKubeconfig := "apiVersion: v1\nkind: Config\nusers:\n- name: x\n  user:\n    token: " + plantedToken +
		"\n    client-key-data: " + base64.StdEncoding.EncodeToString([]byte("-----BEGIN EC PRIVATE KEY-----\n"+plantedKey+"\n-----END EC PRIVATE KEY-----\n")) + "\n"
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "seine-planted", Namespace: "kube-system", Labels: map[string]string{"app": "seine"}},
		Data: map[string]string{"kubeconfig": plantedKubeconfig, "key.pem": "-----BEGIN EC PRIVATE KEY-----\n" + plantedKey + "\n-----END EC PRIVATE KEY-----\n"}}
	if _, err := e.cs.CoreV1().ConfigMaps("kube-system").Create(e.ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secrets := []string{plantedToken, plantedKey}
	tokens := map[string]string{}
	for _, who := range []string{"seine-agent", "seine-controller", "admin", "prometheus"} {
		kc, err := clientcmd.LoadFromFile(e.c.KubeconfigPath(who))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range kc.AuthInfos {
			if a.Token != "" {
				tokens[who] = a.Token
				secrets = append(secrets, a.Token)
			}
		}
	}
	for _, key := range []string{"ca.key", "sa.key", "apiserver.key"} {
		b := readFile(t, filepath.Join(e.c.PKIDir(), key))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		secrets = append(secrets, lines[1]) // the key's first line of base64
	}

	// The agents' /supportbundle: who may get it.
	saToken := func() string {
		secs := int64(600)
		tr, err := e.cs.CoreV1().ServiceAccounts("kube-system").CreateToken(e.ctx, supportbundle.ServiceAccount,
			&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}()
	secrets = append(secrets, saToken)
	client := supportbundle.DefaultClient()
	client.Timeout = 60 * time.Second
	get := func(addr, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(e.ctx, http.MethodGet, "https://"+addr+bundle.Path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return resp.StatusCode, string(b)
	}
	// The agent answers a request without credentials 401; seine-controller
	// (k8s.io/apiserver) takes it as system:anonymous, who may not: 403.
	for server, addr := range map[string]string{
		"agent " + nodes[0].Name: relays.Addrs[nodes[0].Name],
		"seine-controller":       strings.TrimPrefix(e.c.ControllerURL(), "https://"),
	} {
		for _, c := range []struct {
			who, token string
			want       []int
		}{
			{"no token", "", []int{http.StatusUnauthorized, http.StatusForbidden}},
			{"a wrong token", "not-a-token-the-apiserver-knows", []int{http.StatusUnauthorized}},
			{"seine:prometheus (get /metrics only)", tokens["prometheus"], []int{http.StatusForbidden}},
			{"serviceaccount seine-supportbundle", saToken, []int{http.StatusOK}},
		} {
			code, body := get(addr, c.token)
			if !slices.Contains(c.want, code) {
				t.Errorf("%s, %s: %d %q, want %v", server, c.who, code, body, c.want)
			} else {
				t.Logf("%s, %s: %d", server, c.who, code)
			}
		}
	}

	seinectl := func(timeout time.Duration) (string, map[string]string, error, time.Duration) {
		t.Helper()
		dir := t.TempDir()
		args := []string{"supportbundle", "--kubeconfig", e.c.AdminKubeconfig(), "-d", dir, "--since", "1h",
			"--timeout", timeout.String(), "--controller-address", strings.TrimPrefix(e.c.ControllerURL(), "https://")}
		for n, a := range relays.Addrs {
			args = append(args, "--agent-address", n+"="+a)
		}
		cmd := exec.CommandContext(e.ctx, filepath.Join(e.c.SeineBin, "seinectl"), args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		runErr := cmd.Run()
		took := time.Since(start)
		t.Logf("seinectl supportbundle (%s): %v\nstdout: %s\nstderr: %s", took.Round(time.Millisecond), runErr, stdout.String(), stderr.String())
		matches, _ := filepath.Glob(filepath.Join(dir, "seine-supportbundle-*.tar.gz"))
		if len(matches) != 1 {
			t.Fatalf("archives in %s: %v", dir, matches)
		}
		files := untar(t, readFile(t, matches[0]))
		return stderr.String(), files, runErr, took
	}

	_, files, err, _ := seinectl(60 * time.Second)
	if err != nil {
		t.Errorf("seinectl supportbundle with every node up: %v", err)
	}
	checkNoSecrets(t, files, secrets)
	for _, n := range nodes {
		d := "nodes/" + n.Name + "/"
		want := map[string]string{
			d + "summary.txt":          "OK    agent/log.txt",
			d + "agent/config.yaml":    "nodeName: " + n.Name,
			d + "agent/log.txt":        "level=",
			d + "ovs/ovsdb.txt":        "Bridge br-int",
			d + "ovs/flows.txt":        " flows\n",
			d + "host/diagnostics.txt": "routes",
			d + "pprof/goroutine.txt":  "goroutine ",
			d + "pprof/heap.txt":       "heap profile",
			d + "agentinfo.yaml":       "name: " + n.Name,
		}
		for name, s := range want {
			if !strings.Contains(files[name], s) {
				t.Errorf("%s: want %q in:\n%.600s", name, s, files[name])
			}
		}
		if _, ok := files[d+"ERROR.txt"]; ok {
			t.Errorf("%s: %s", d+"ERROR.txt", files[d+"ERROR.txt"])
		}
		if strings.Contains(files[d+"summary.txt"], "FAIL") {
			t.Logf("%s (some sources failed):\n%s", d+"summary.txt", files[d+"summary.txt"])
		}
	}
	for _, p := range pods {
		if f := "nodes/" + p.Spec.NodeName + "/agent/pods.txt"; !strings.Contains(files[f], p.Namespace+"/"+p.Name) {
			t.Errorf("%s does not list pod %s:\n%s", f, p.Name, files[f])
		}
	}
	for name, s := range map[string]string{
		"cluster/crd.seine.io/seineagentinfos.yaml": "name: " + nodes[2].Name,
		"cluster/configmaps.yaml":                   "seine-planted",
		"cluster/registration.yaml":                 "name: v1beta1.controlplane.seine.io",
		"cluster/nodes.txt":                         nodes[1].Name,
		"controller/log.txt":                        "level=",
		"controller/state.txt":                      "networkpolicies",
		"summary.txt":                               "OK    node " + nodes[0].Name,
	} {
		if !strings.Contains(files[name], s) {
			t.Errorf("%s: want %q in:\n%.600s", name, s, files[name])
		}
	}
	t.Logf("the archive:\n%s", listing(files))

	// One agent stopped (its port refuses) and one frozen (SIGSTOP: the
	// kernel accepts the connection, nothing answers): both reported, in
	// the archive and on stderr, after the timeout and not later; the
	// third node's part whole.
	down, frozen := nodes[2].Name, nodes[1].Name
	if err := e.c.StopAgent(down); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.c.StartAgent(down); err != nil {
			t.Error(err)
		}
	}()
	pid := e.c.ComponentPID("agent-" + frozen)
	if pid <= 0 {
		t.Fatalf("no agent process on %s", frozen)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	const timeout = 10 * time.Second
	stderr, files, err, took := seinectl(timeout)
	syscall.Kill(pid, syscall.SIGCONT)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("seinectl supportbundle with %s's agent stopped and %s's frozen: %v, want exit status 1", down, frozen, err)
	}
	if took < timeout || took > 2*timeout {
		t.Errorf("with an agent frozen the bundle took %s, want the timeout (%s) and a little", took, timeout)
	}
	for _, n := range []string{down, frozen} {
		if !strings.Contains(stderr, "node "+n) {
			t.Errorf("stderr does not name %s:\n%s", n, stderr)
		}
		if s := files["nodes/"+n+"/ERROR.txt"]; s == "" {
			t.Errorf("no nodes/%s/ERROR.txt", n)
		}
		if !strings.Contains(files["summary.txt"], "FAIL  node "+n) {
			t.Errorf("summary does not fail %s:\n%s", n, files["summary.txt"])
		}
		if !strings.Contains(files["nodes/"+n+"/agentinfo.yaml"], "name: "+n) {
			t.Errorf("%s, whose agent does not answer, has no agent info:\n%s", n, files["nodes/"+n+"/agentinfo.yaml"])
		}
	}
	if !strings.Contains(files["nodes/"+frozen+"/ERROR.txt"], "no answer within "+timeout.String()) {
		t.Errorf("%s's error: %s", frozen, files["nodes/"+frozen+"/ERROR.txt"])
	}
	whole := nodes[0].Name
	if !strings.Contains(files["summary.txt"], "OK    node "+whole) || !strings.Contains(files["nodes/"+whole+"/ovs/flows.txt"], " flows\n") {
		t.Errorf("%s's part is not whole with the others down:\n%s", whole, files["summary.txt"])
	}
	t.Logf("summary.txt:\n%s", files["summary.txt"])
	checkNoSecrets(t, files, secrets)
}

func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	files := map[string]string{}
	if err := bundle.Unpack(bytes.NewReader(b), func(name string, body []byte) error {
		files[name] = string(body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return files
}

// checkNoSecrets: no file of the archive holds a secret, in the clear or
// base64-encoded.
func checkNoSecrets(t *testing.T, files map[string]string, secrets []string) {
	t.Helper()
	for name, body := range files {
		for _, s := range secrets {
			if strings.Contains(body, s) || strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(s))) {
				t.Errorf("%s holds a secret (%.12s...)", name, s)
			}
		}
	}
}

func listing(files map[string]string) string {
	var names []string
	for n, b := range files {
		names = append(names, fmt.Sprintf("%8d  %s", len(b), n))
	}
	slices.Sort(names)
	return strings.Join(names, "\n")
}
