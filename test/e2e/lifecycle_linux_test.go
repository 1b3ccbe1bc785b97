package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

var metav1GetOptions = metav1.GetOptions{}

func prefixes(t *testing.T, ss []string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestPodLifecycle: deleting pods leaves no IP, port, flow, netns or veth,
// also after many create/delete cycles; CNI ADD with a malformed config, an
// unknown netns or an exhausted pool returns the right CNI error and leaves
// nothing.
func TestPodLifecycle(t *testing.T) {
	e := upLab(t, "encap", "geneve")
	// 200 cycles took 7m18s on the 2-core machine at load 25-30 (a cycle:
	// median 2.0 s, p90 3.2 s, max 5.7 s), half of the suite's 15-minute
	// context. Each cycle's waits bound a stall on their own (4 minutes
	// for the pods, 2 to see them go); the whole test gets 40 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	t.Cleanup(cancel)
	e.ctx = ctx
	nodes := []string{"node-1", "node-2", "node-3"}

	t.Run("create/delete cycles", func(t *testing.T) {
		const cycles = 200
		var took []time.Duration
		for i := range cycles {
			start := time.Now()
			name := "cycle-" + strconv.Itoa(i)
			pods := e.deploy(name, 6)
			if i == 0 {
				checkSpread(t, pods)
				for _, n := range nodes {
					if left := e.nodeLeftovers(t, n, 2); left != "" {
						t.Errorf("%s with 2 pods:\n%s", n, left)
					}
				}
			}
			if err := e.cs.AppsV1().Deployments("default").Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			e.waitFor("the pods of "+name+" to go", 2*time.Minute, func() error {
				l, err := e.cs.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{LabelSelector: "app=" + name})
				if err != nil {
					return err
				}
				if len(l.Items) > 0 {
					return fmt.Errorf("%d pods left", len(l.Items))
				}
				return nil
			})
			took = append(took, time.Since(start))
		}
		logCycles(t, e, took)
		for _, n := range nodes {
			e.waitFor(n+" to be clean", 30*time.Second, func() error {
				if left := e.nodeLeftovers(t, n, 0); left != "" {
					return fmt.Errorf("%s", left)
				}
				return nil
			})
		}
		t.Logf("%d cycles of 6 pods created and deleted, nothing left on the nodes", cycles)
	})

	t.Run("CNI ADD errors", func(t *testing.T) {
		node := "node-1"
		podNS := filepath.Join(t.TempDir(), "netns")
		if err := ovsdaemon.CreateNetNS(podNS); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ovsdaemon.DeleteNetNS(podNS) })
		conf := e.cniConfig(t, node)

		code, msg := e.cniCall(t, node, "ADD", "bad-config", podNS, "eth0", "bad", []byte(`{"cniVersion": "1.1.0", "name": `))
		if code != types.ErrDecodingFailure {
			t.Errorf("malformed config: code %d (%s), want %d", code, msg, types.ErrDecodingFailure)
		}
		code, msg = e.cniCall(t, node, "ADD", "no-netns", "/run/netns/seine-e2e-does-not-exist", "eth0", "nons", conf)
		if code != types.ErrInvalidEnvironmentVariables {
			t.Errorf("unknown netns: code %d (%s), want %d", code, msg, types.ErrInvalidEnvironmentVariables)
		}
		if left := e.nodeLeftovers(t, node, 0); left != "" {
			t.Errorf("after the failed ADDs:\n%s", left)
		}

		// Exhaust the node's /24: 253 addresses besides the gateway.
		var added []string
		start := time.Now()
		for i := range 300 {
			id := fmt.Sprintf("fill-%03d", i)
			code, msg := e.cniCall(t, node, "ADD", id, podNS, "eth"+strconv.Itoa(i), "fill", conf)
			if code != 0 {
				if !strings.Contains(msg, "no free address") {
					t.Errorf("ADD %d: code %d (%s), want an exhausted pool", i, code, msg)
				}
				t.Logf("pool exhausted after %d pods (%s): code %d: %s", len(added), time.Since(start).Round(time.Millisecond), code, msg)
				break
			}
			added = append(added, id)
		}
		if len(added) != 253 {
			t.Errorf("%d pods fit in a /24, want 253", len(added))
		}
		if left := e.nodeLeftovers(t, node, len(added)); left != "" {
			t.Errorf("the ADD that found the pool exhausted left:\n%s", left)
		}
		for i, id := range added {
			if code, msg := e.cniCall(t, node, "DEL", id, podNS, "eth"+strconv.Itoa(i), "fill", conf); code != 0 {
				t.Errorf("DEL %s: code %d: %s", id, code, msg)
			}
		}
		if left := e.nodeLeftovers(t, node, 0); left != "" {
			t.Errorf("after deleting the filler pods:\n%s", left)
		}
	})
}

// logCycles reports how long the cycles took and how much of the test's
// context was left after them.
func logCycles(t *testing.T, e *env, took []time.Duration) {
	t.Helper()
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	var total time.Duration
	for _, d := range took {
		total += d
	}
	left := "no deadline"
	if dl, ok := e.ctx.Deadline(); ok {
		left = time.Until(dl).Round(time.Second).String() + " of the context left"
	}
	t.Logf("%d cycles in %s: per cycle min %s, median %s, p90 %s, max %s; %s",
		len(took), total.Round(time.Second), sorted[0].Round(time.Millisecond), sorted[len(sorted)/2].Round(time.Millisecond),
		sorted[len(sorted)*9/10].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), left)
}

// cniConfig is the network configuration the agent wrote on node.
func (e *env) cniConfig(t *testing.T, node string) []byte {
	t.Helper()
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	b := readFile(t, filepath.Join(e.c.NodeCNIConfDir(node), agent.CNIConfFile))
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	var plugin map[string]any
	if err := json.Unmarshal(list.Plugins[0], &plugin); err != nil {
		t.Fatal(err)
	}
	plugin["cniVersion"], plugin["name"] = list.CNIVersion, list.Name
	out, _ := json.Marshal(plugin)
	return out
}

// cniCall runs seine-cni in the node's namespace as a runtime would and
// returns the CNI error code (0 on success) and message.
func (e *env) cniCall(t *testing.T, node, cmd, id, netns, ifname, pod string, conf []byte) (uint, string) {
	t.Helper()
	c := exec.CommandContext(e.ctx, "nsenter", "--net="+e.c.NetNSPath(node), "--", filepath.Join(e.c.SeineCNIBinDir(), "seine"))
	c.Env = []string{
		"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns, "CNI_IFNAME=" + ifname,
		"CNI_PATH=" + e.c.SeineCNIBinDir(), "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + pod,
	}
	c.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err == nil {
		return 0, ""
	}
	var te types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &te); jerr != nil || te.Code == 0 {
		t.Fatalf("seine-cni %s: %v, stdout %q, stderr %q", cmd, err, stdout.String(), stderr.String())
	}
	return te.Code, te.Msg
}
