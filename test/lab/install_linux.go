package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/images"
)

// Seine on real nodes is installed as users install it: `kubectl apply -f
// installer/kubernetes/seine.yml`. The lab changes only what differs
// between this machine and a real cluster (LabPatches), each patch checked
// to have matched, so a change of the manifest that a patch no longer fits
// fails loudly instead of installing something else:
//
//   - images: the locally built ones (`make images`: Seine's tag is a hash
//     of its binaries, seine-ovs's the Debian Open vSwitch version) instead
//     of the published ones; their tags are not "latest", so the kubelet's
//     default pull policy is IfNotPresent and the imported images are used;
//   - the userspace datapath: this kernel has no openvswitch module, so
//     datapathType netdev and the bridged-uplink topology with the node's
//     eth0 as the uplink (what the manifest's header tells users of such
//     nodes to set);
//   - the API server: there is no kube-proxy and Seine serves the
//     kubernetes Service only once it runs, so agent and controller reach
//     kube-apiserver directly (kubeAPIServer, --kube-apiserver) at the
//     node-local address the lab provides in every node's namespace
//     (127.0.0.1:<api port>, the lab's api proxy) — a real cluster sets its
//     control plane's address there.

// manifestPatch replaces old by new in the manifest; every old must occur.
type manifestPatch struct{ old, new, why string }

// LabPatches are the lab's changes to seine.yml for this lab's images and
// nodes (see above).
func (c *Config) LabPatches(idx *images.Index) ([]manifestPatch, error) {
	if idx.Names.Seine == "" || idx.Names.OVS == "" {
		return nil, fmt.Errorf("images in %s: Seine's and seine-ovs's are needed (make images builds them)", c.ImagesDir)
	}
	api := "https://127.0.0.1:" + strconv.Itoa(c.APIPort)
	return []manifestPatch{
		{`image: ghcr.io/seine-cni/seine:latest`, "image: " + idx.Names.Seine, "the locally built Seine image"},
		{`regexp:image: ghcr.io/seine-cni/seine-ovs:\S+`, "image: " + idx.Names.OVS, "the locally built Open vSwitch image"},
		{`datapathType: system`, `datapathType: netdev`, "no openvswitch kernel module: the userspace datapath"},
		{`topology: routedHost`, `topology: bridgedUplink`, "the userspace datapath's topology"},
		{`uplink: ""`, `uplink: eth0`, "the lab node's interface"},
		{`# kubeAPIServer: https://<control plane>:6443`, "kubeAPIServer: " + api, "no kube-proxy: the node-local API server address"},
		{`- --apiservice=v1beta1.controlplane.seine.io`, "- --apiservice=v1beta1.controlplane.seine.io\n        - --kube-apiserver=" + api, "no kube-proxy: the node-local API server address"},
	}, nil
}

// PatchManifest applies patches to a manifest.
func PatchManifest(manifest []byte, patches []manifestPatch) ([]byte, error) {
	out := string(manifest)
	for _, p := range patches {
		if re, ok := strings.CutPrefix(p.old, "regexp:"); ok {
			r := regexp.MustCompile(re)
			if !r.MatchString(out) {
				return nil, fmt.Errorf("seine.yml has no %q to change (%s)", re, p.why)
			}
			out = r.ReplaceAllLiteralString(out, p.new)
			continue
		}
		if !strings.Contains(out, p.old) {
			return nil, fmt.Errorf("seine.yml has no %q to change (%s)", p.old, p.why)
		}
		out = strings.ReplaceAll(out, p.old, p.new)
	}
	return []byte(out), nil
}

// InstallSeine applies the manifest (installer/kubernetes/seine.yml's
// text) with the lab's patches through kubectl, as a user does, and waits
// until every node is Ready, the seine-ovs and seine-agent DaemonSets and
// the seine-controller Deployment are ready and the controlplane.seine.io
// APIService is Available. The patched manifest is kept in the state
// directory (seine.yml) for `kubectl delete -f`.
func (c *Config) InstallSeine(ctx context.Context, log *slog.Logger, manifest []byte) error {
	if c.Kubelet != KubeletReal || c.CNI != CNINone {
		return fmt.Errorf("seine.yml installs on real nodes without a network plugin (lab up --kubelet real --cni none)")
	}
	idx, err := images.ReadIndex(c.ImagesDir)
	if err != nil {
		return err
	}
	patches, err := c.LabPatches(idx)
	if err != nil {
		return err
	}
	patched, err := PatchManifest(manifest, patches)
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.SeineManifestPath(), patched, 0o644); err != nil {
		return err
	}
	start := time.Now()
	if out, err := c.Kubectl(ctx, "apply", "-f", c.SeineManifestPath()); err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w\n%s", c.SeineManifestPath(), err, out)
	}
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	if err := waitSeineReady(ctx, cs, c.Nodes, 5*time.Minute); err != nil {
		return err
	}
	log.Info("seine installed from seine.yml", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// SeineManifestPath is the patched seine.yml InstallSeine applied.
func (c *Config) SeineManifestPath() string { return c.path("seine.yml") }

// Kubectl runs the lab's kubectl (the control plane's release) as admin.
func (c *Config) Kubectl(ctx context.Context, args ...string) (string, error) {
	// The discovery cache is the lab's: under $HOME it would outlive the
	// lab, and a later lab on the same port, with other resources, would
	// be asked for the old ones.
	cmd := exec.CommandContext(ctx, c.KubeBin, append([]string{"kubectl", "--kubeconfig", c.AdminKubeconfig(),
		"--cache-dir", filepath.Join(c.StateDir, "kubectl-cache")}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// waitSeineReady waits until Seine's objects are ready on nodes nodes (see
// InstallSeine), saying what is not when the time is up.
func waitSeineReady(ctx context.Context, cs kubernetes.Interface, nodes int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := seineNotReady(ctx, cs, nodes)
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("seine not ready after %s: %s\n%s", timeout, strings.Join(missing, "; "),
				DescribePods(context.WithoutCancel(ctx), cs, "kube-system", "app=seine"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func seineNotReady(ctx context.Context, cs kubernetes.Interface, nodes int) []string {
	var missing []string
	for _, name := range []string{"seine-ovs", "seine-agent"} {
		ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			missing = append(missing, fmt.Sprintf("daemonset %s: %v", name, err))
		} else if !daemonSetReady(ds, nodes) {
			missing = append(missing, fmt.Sprintf("daemonset %s: %d/%d ready, %d updated", name, ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, ds.Status.UpdatedNumberScheduled))
		}
	}
	d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "seine-controller", metav1.GetOptions{})
	if err != nil {
		missing = append(missing, "deployment seine-controller: "+err.Error())
	} else if d.Status.ReadyReplicas < 1 || d.Status.ObservedGeneration < d.Generation {
		missing = append(missing, fmt.Sprintf("deployment seine-controller: %d ready", d.Status.ReadyReplicas))
	}
	ns, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		missing = append(missing, "nodes: "+err.Error())
	} else {
		for _, n := range ns.Items {
			if !NodeReady(&n) {
				missing = append(missing, "node "+n.Name+" NotReady")
			}
		}
	}
	if ok, why := apiServiceAvailable(ctx, cs, "v1beta1.controlplane.seine.io"); !ok {
		missing = append(missing, "apiservice v1beta1.controlplane.seine.io: "+why)
	}
	return missing
}

// daemonSetReady: every one of nodes pods runs the DaemonSet's current
// template and is ready.
func daemonSetReady(ds *appsv1.DaemonSet, nodes int) bool {
	s := ds.Status
	return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled == int32(nodes) &&
		s.NumberReady == int32(nodes) && s.UpdatedNumberScheduled == int32(nodes) && s.NumberUnavailable == 0
}

// apiServiceAvailable reads an APIService's Available condition through
// the raw API (the aggregator's client is not in this module).
func apiServiceAvailable(ctx context.Context, cs kubernetes.Interface, name string) (bool, string) {
	var svc struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string }
		}
	}
	b, err := cs.CoreV1().RESTClient().Get().AbsPath("/apis/apiregistration.k8s.io/v1/apiservices/" + name).DoRaw(ctx)
	if err != nil {
		return false, err.Error()
	}
	if err := json.Unmarshal(b, &svc); err != nil {
		return false, err.Error()
	}
	for _, c := range svc.Status.Conditions {
		if c.Type == "Available" {
			return c.Status == string(corev1.ConditionTrue), c.Reason + ": " + c.Message
		}
	}
	return false, "no Available condition"
}

// TagImage gives an image of a real node's containerd a second name (ctr
// images tag), as if a new release had been pulled: a test can then roll a
// DaemonSet to it.
func (c *Config) TagImage(ctx context.Context, node, src, dst string) error {
	_, err := c.inMountNS(ctx, node, filepath.Join(c.RuntimeBin, "ctr"), "--address", containerdSocket, "--namespace", "k8s.io", "images", "tag", "--force", src, dst)
	if err != nil {
		return fmt.Errorf("tag %s as %s on %s: %w", src, dst, node, err)
	}
	return nil
}
