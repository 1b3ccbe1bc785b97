package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// ErrAlreadyUp is returned by Up when the state directory holds a lab.
var ErrAlreadyUp = errors.New("a lab is already up")

// Up brings the whole lab up and returns when every node is Ready with a
// podCIDR and the default ServiceAccount exists (pods can be created). On
// failure it tears down what it made.
func Up(ctx context.Context, log *slog.Logger, c *Config) (err error) {
	c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	if err := c.checkHostPorts(); err != nil {
		return err
	}
	if _, err := os.Stat(c.stateFile()); err == nil {
		return fmt.Errorf("%w in %s: run `lab down` first", ErrAlreadyUp, c.StateDir)
	}
	if left := c.labNamespaces(ctx); len(left) > 0 {
		return fmt.Errorf("namespaces %v are left from an earlier lab: run `lab down` first", left)
	}
	if c.KubeBin == "" || c.LabBin == "" {
		return errors.New("the labkube and lab binaries must be given")
	}
	for _, f := range []*string{&c.KubeBin, &c.LabBin, &c.CNIBin, &c.SeineBin, &c.RuntimeBin, &c.ImagesDir} {
		if *f == "" {
			continue
		}
		if *f, err = filepath.Abs(*f); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return err
	}
	if err := c.Save(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			log.Error("lab up failed; tearing down", "err", err)
			if derr := Down(context.WithoutCancel(ctx), log, c.StateDir); derr != nil {
				log.Error("tear down", "err", derr)
			}
		}
	}()
	start := time.Now()
	if err := c.writePKI(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := c.createTopology(ctx); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	log.Info("topology ready", "nodes", c.Nodes, "elapsed", time.Since(start).Round(time.Millisecond))
	if err := c.startControlPlane(ctx); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	log.Info("control plane ready", "elapsed", time.Since(start).Round(time.Millisecond))
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	if err := kubeletAPIRBAC(ctx, cs); err != nil {
		return err
	}
	if c.Kubelet == KubeletReal {
		return c.upRealNodes(ctx, log, cs, start)
	}
	switch c.CNI {
	case CNIPtp:
		if err := c.writeCNITemplate(); err != nil {
			return err
		}
	case CNISeine:
		if err := c.installCNIPlugin(); err != nil {
			return err
		}
		if err := labRBAC(ctx, cs); err != nil {
			return err
		}
		if err := c.startController(ctx, cs); err != nil {
			return fmt.Errorf("seine-controller: %w", err)
		}
		log.Info("seine-controller ready", "url", c.ControllerURL(), "elapsed", time.Since(start).Round(time.Millisecond))
	}
	for _, n := range c.NodeList() {
		if err := c.startNode(ctx, n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	nodes, err := c.waitNodesReady(ctx, cs, 3*time.Minute)
	if err != nil {
		return err
	}
	if err := c.routePodCIDRs(ctx, nodes); err != nil {
		return err
	}
	if err := waitServiceAccount(ctx, cs, 2*time.Minute); err != nil {
		return err
	}
	log.Info("lab up", "nodes", c.Nodes, "elapsed", time.Since(start).Round(time.Millisecond), "kubeconfig", c.AdminKubeconfig())
	return nil
}

// startNode starts the node's own OVS and its kubelet stand-in.
func (c *Config) startNode(ctx context.Context, n Node) error {
	for _, d := range []string{c.NodeCNIConfDir(n.Name), c.NodePodNetNSDir(n.Name), c.NodeKubeletDir(n.Name)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := ovsdaemon.Start(ctx, ovsdaemon.Options{Dir: c.NodeOVSDir(n.Name), NetNS: c.NetNSPath(n.Name), Detach: true}); err != nil {
		return fmt.Errorf("ovs: %w", err)
	}
	if c.CNI == CNISeine {
		if err := c.startAgent(n); err != nil {
			return fmt.Errorf("seine-agent: %w", err)
		}
	}
	if c.KubeProxy != "" {
		if err := c.startKubeProxy(n); err != nil {
			return fmt.Errorf("kube-proxy: %w", err)
		}
	}
	return c.startComponent(component{
		name:  "kubelet-" + n.Name,
		netns: c.NetNSPath(n.Name),
		argv:  []string{c.LabBin, "kubelet", "--state-dir", c.StateDir, "--node", n.Name},
	})
}

// waitNodesReady waits until every lab node is Ready and has a podCIDR.
func (c *Config) waitNodesReady(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) ([]corev1.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := c.NodeList()
	for {
		var ready []corev1.Node
		var waiting []string
		for _, n := range want {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			switch {
			case err != nil:
				waiting = append(waiting, n.Name+": "+shortErr(err))
			case node.Spec.PodCIDR == "":
				waiting = append(waiting, n.Name+": no podCIDR")
			case !NodeReady(node):
				waiting = append(waiting, n.Name+": not Ready")
			default:
				ready = append(ready, *node)
			}
		}
		if len(waiting) == 0 {
			return ready, nil
		}
		for _, n := range want {
			for _, comp := range c.nodeComponents(n.Name) {
				if c.componentPID(comp) == 0 {
					return nil, fmt.Errorf("%s exited:\n%s", comp, c.logTail(comp, 15))
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("nodes not ready after %s: %s", timeout, strings.Join(waiting, "; "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nodeComponents are the processes the lab runs for a node.
func (c *Config) nodeComponents(node string) []string {
	comps := []string{"kubelet-" + node}
	if c.Kubelet == KubeletReal {
		comps = append(comps, "containerd-"+node)
	}
	if c.CNI == CNISeine && c.Kubelet != KubeletReal {
		comps = append(comps, "agent-"+node)
	}
	if c.KubeProxy != "" {
		comps = append(comps, "kube-proxy-"+node)
	}
	return comps
}

// NodeReady reports the node's Ready condition.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func shortErr(err error) string {
	if apierrors.IsNotFound(err) {
		return "not registered"
	}
	return err.Error()
}

// waitServiceAccount waits for the token controller's "default"
// ServiceAccount, without which the apiserver refuses pods.
func waitServiceAccount(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("default ServiceAccount not created after %s: %w", timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Down stops everything the lab in stateDir started and removes what it
// created: processes, OVS instances, pod namespace mounts, named namespaces
// (with their links) and the state directory. It works on a half-built lab
// and on no lab at all.
func Down(ctx context.Context, log *slog.Logger, stateDir string) error {
	// Down cleans up after runs that ran out of time, so it does not stop
	// with the caller's context: commands under an expired one fail at
	// once (the namespaces were never listed, so never deleted, and the
	// state directory that names them was removed). Its own bound instead.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	c, err := Load(stateDir)
	if err != nil {
		c = &Config{StateDir: stateDir}
		c.Defaults()
	}
	var errs []error
	// Stop in reverse order of dependency: kubelets (nothing recreates pod
	// sandboxes while we remove them) and agents, then the control plane from
	// the top, etcd last (kube-apiserver takes seconds to stop without it).
	for _, name := range stopOrder(c.components()) {
		errs = appendErr(errs, c.stopComponent(name, 10*time.Second))
	}
	nodeDirs, _ := filepath.Glob(filepath.Join(stateDir, "nodes", "*", "ovs"))
	for _, dir := range nodeDirs {
		if d, err := ovsdaemon.Attach(dir); err == nil {
			errs = appendErr(errs, d.Stop(ctx))
		}
	}
	errs = appendErr(errs, c.removeControllerLink(ctx))
	// Real nodes: their containers (by cgroup), then whatever still runs in
	// their mount namespaces (containerd's shims), then the namespaces.
	for _, n := range c.NodeList() {
		errs = appendErr(errs, c.removeCgroupRoot(n.Name))
		errs = appendErr(errs, c.killMountNS(n.Name))
	}
	errs = appendErr(errs, c.removeMountNamespaces())
	errs = appendErr(errs, unmountUnder(stateDir))
	errs = appendErr(errs, c.removeNamespaces(ctx))
	errs = appendErr(errs, machine.leave(stateDir))
	if len(errs) > 0 {
		// The state directory stays, so that the next `lab down` finds
		// what is left and finishes.
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		return err
	}
	log.Info("lab down", "stateDir", stateDir)
	return nil
}

// stopOrder sorts component names for shutdown.
func stopOrder(names []string) []string {
	rank := func(n string) int {
		switch {
		case strings.HasPrefix(n, "kubelet-"), strings.HasPrefix(n, "agent-"):
			return 0
		case strings.HasPrefix(n, "containerd-"):
			return 1
		case n == "etcd":
			return 5
		case n == "kube-apiserver":
			return 4
		case n == "api-proxy":
			return 3
		default:
			return 2
		}
	}
	out := slices.Clone(names)
	slices.SortStableFunc(out, func(a, b string) int { return rank(a) - rank(b) })
	return out
}

func appendErr(errs []error, err error) []error {
	if err != nil {
		return append(errs, err)
	}
	return errs
}

// unmountUnder removes every mount below dir (pod network namespaces bind-
// mounted by the kubelets), deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	mounts, err := mountsUnder(f, dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		errs = appendErr(errs, netns.Remove(mounts[i]))
	}
	return errors.Join(errs...)
}

// mountsUnder returns the mount points below dir in mountinfo order.
func mountsUnder(r io.Reader, dir string) ([]string, error) {
	dir = filepath.Clean(dir) + "/"
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
