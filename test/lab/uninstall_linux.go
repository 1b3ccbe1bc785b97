package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab/images"
)

// UninstallSeine removes Seine as installer/kubernetes/README.md
// ("Uninstall") tells users to: delete the seine-agent DaemonSet (its pods
// gone), apply seine-cleanup.yml (cleanupManifest, with the lab's image)
// and wait until its DaemonSet is ready (every node cleaned while Open
// vSwitch still runs), then `kubectl delete -f` both manifests and wait
// until no pod of Seine's is left. The seine.yml InstallSeine applied
// (SeineManifestPath) is the one deleted.
func (c *Config) UninstallSeine(ctx context.Context, log *slog.Logger, cleanupManifest []byte) error {
	idx, err := images.ReadIndex(c.ImagesDir)
	if err != nil {
		return err
	}
	patches, err := c.LabPatches(idx)
	if err != nil {
		return err
	}
	patched, err := PatchManifest(cleanupManifest, patches[:1]) // the image only
	if err != nil {
		return err
	}
	cleanupPath := c.path("seine-cleanup.yml")
	if err := os.WriteFile(cleanupPath, patched, 0o644); err != nil {
		return err
	}
	start := time.Now()
	for _, step := range [][]string{
		{"-n", "kube-system", "delete", "daemonset", "seine-agent", "--cascade=foreground", "--timeout=2m"},
		{"apply", "-f", cleanupPath},
		{"-n", "kube-system", "rollout", "status", "daemonset", "seine-node-cleanup", "--timeout=3m"},
	} {
		if out, err := c.Kubectl(ctx, step...); err != nil {
			cs, _ := c.Client("admin")
			return fmt.Errorf("kubectl %s: %w\n%s\n%s", strings.Join(step, " "), err, out,
				DescribePods(context.WithoutCancel(ctx), cs, "kube-system", "app=seine"))
		}
	}
	report, _ := c.Kubectl(ctx, "-n", "kube-system", "logs", "-l", "component=seine-node-cleanup", "-c", "node-cleanup", "--prefix", "--tail=-1")
	log.Info("every node cleaned", "elapsed", time.Since(start).Round(time.Millisecond), "node-cleanup", "\n"+report)
	if out, err := c.Kubectl(ctx, "delete", "-f", cleanupPath, "-f", c.SeineManifestPath(), "--ignore-not-found", "--timeout=2m"); err != nil {
		return fmt.Errorf("kubectl delete: %w\n%s", err, out)
	}
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app=seine"})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("seine's pods still there 2m after kubectl delete: %v\n%s", err,
				DescribePods(context.WithoutCancel(ctx), cs, "kube-system", "app=seine"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	log.Info("seine uninstalled", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
