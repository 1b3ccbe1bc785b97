package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/test/lab/kubelet"
)

// Status prints the lab's components, nodes and pods.
func Status(ctx context.Context, c *Config, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tPID\tSTATE")
	names := c.components()
	sort.Strings(names)
	for _, name := range names {
		pid, state := c.componentPID(name), "running"
		if pid == 0 {
			state = "EXITED (see lab logs " + name + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", name, pid, state)
	}
	tw.Flush()
	fmt.Fprintln(w)
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	if err := PrintNodes(ctx, cs, w); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := 0
	for _, p := range pods.Items {
		if PodReady(&p) {
			ready++
		}
	}
	fmt.Fprintf(w, "\npods: %d, ready: %d\n", len(pods.Items), ready)
	return nil
}

// LogPath returns the log file of a component: a process the lab started
// (see Status) or a node's OVS daemon ("ovs-vswitchd-node-1",
// "ovsdb-server-node-1").
func (c *Config) LogPath(component string) (string, error) {
	for _, prog := range []string{"ovs-vswitchd", "ovsdb-server"} {
		if node, ok := strings.CutPrefix(component, prog+"-"); ok {
			return filepath.Join(c.NodeOVSDir(node), "log", prog+".log"), nil
		}
	}
	p := filepath.Join(c.LogDir(), component+".log")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no log for %q: components are %s and ovs-vswitchd-<node>, ovsdb-server-<node>", component, strings.Join(c.components(), ", "))
	}
	return p, nil
}

// Exec runs a command inside a pod's network namespace.
func Exec(ctx context.Context, c *Config, podRef string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	pod, err := GetPod(ctx, cs, podRef)
	if err != nil {
		return err
	}
	ns, err := c.PodNetNS(pod)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns, "--"}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// Check asks the pod's node to run CNI CHECK for it. The plugin must run in
// the node's namespace, as under a runtime, so the lab re-executes itself
// there.
func Check(ctx context.Context, c *Config, podRef string) error {
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	pod, err := GetPod(ctx, cs, podRef)
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		return fmt.Errorf("pod %s is not scheduled", podRef)
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+c.NetNSPath(pod.Spec.NodeName), "--",
		c.LabBin, "kubelet-check", "--state-dir", c.StateDir, "--node", pod.Spec.NodeName, "--pod-uid", string(pod.UID))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("CNI CHECK of %s failed: %s", podRef, strings.TrimSpace(string(out)))
	}
	return nil
}

// kubeletConfig is the kubelet stand-in's configuration for a lab node.
func (c *Config) kubeletConfig(log *slog.Logger, node string) (kubelet.Config, error) {
	var n *Node
	for _, x := range c.NodeList() {
		if x.Name == node {
			n = &x
		}
	}
	if n == nil {
		return kubelet.Config{}, fmt.Errorf("no node %q in this lab", node)
	}
	cs, err := c.Client(node)
	if err != nil {
		return kubelet.Config{}, err
	}
	cfg := kubelet.Config{
		NodeName:   n.Name,
		NodeIP:     n.IP,
		OS:         n.OS,
		Client:     cs,
		CNIBinDirs: []string{c.cniBinDir()},
		CNIConfDir: c.NodeCNIConfDir(node),
		NetNSDir:   c.NodePodNetNSDir(node),
		StateDir:   c.NodeKubeletDir(node),
		Logger:     log.With("node", node),
	}
	if c.CNI == CNISeine {
		cfg.CNIBinDirs = append(cfg.CNIBinDirs, c.SeineCNIBinDir())
	}
	if c.CNI == CNIPtp {
		tmpl, err := os.ReadFile(c.CNITemplatePath())
		if err != nil {
			return kubelet.Config{}, err
		}
		cfg.CNIConfTemplate = string(tmpl)
	}
	return cfg, nil
}

// RunKubelet runs the kubelet stand-in of a node; the lab starts it inside
// the node's network namespace.
func RunKubelet(ctx context.Context, log *slog.Logger, c *Config, node string) error {
	klog.SetSlogLogger(log)
	cfg, err := c.kubeletConfig(log, node)
	if err != nil {
		return err
	}
	return kubelet.Run(ctx, cfg)
}

// KubeletCheck runs CNI CHECK for one pod of the node this process runs in.
func KubeletCheck(ctx context.Context, log *slog.Logger, c *Config, node, podUID string) error {
	cfg, err := c.kubeletConfig(log, node)
	if err != nil {
		return err
	}
	return kubelet.Check(ctx, cfg, podUID)
}
