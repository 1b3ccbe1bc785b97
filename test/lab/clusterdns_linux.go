package lab

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/template"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/images"
)

// The cluster's DNS on real nodes: CoreDNS in kube-system behind the
// kube-dns Service at ClusterDNSIP, the address every kubelet gives its pods
// (clusterDNS, clusterDomain: realKubeletConfig). It is what a kubeadm
// cluster runs, with the lab's CoreDNS image (make images) and a Corefile
// that answers the cluster's zones and forwards nothing (clusterdns.yaml).
// CoreDNS reads Services and EndpointSlices through the "kubernetes"
// Service (10.96.0.1:443, in-cluster configuration with its ServiceAccount
// token), so it becomes ready only when the cluster's service proxy takes
// pods to the apiserver's advertised address (APIAdvertiseIP).

//go:embed clusterdns.yaml
var clusterDNSManifest string

// ClusterDNSManifest renders clusterdns.yaml for this lab with the CoreDNS
// image named in idx.
func (c *Config) ClusterDNSManifest(idx *images.Index) ([]byte, error) {
	if idx.Names.CoreDNS == "" {
		return nil, fmt.Errorf("images in %s: no CoreDNS image (make images builds it)", c.ImagesDir)
	}
	t, err := template.New("clusterdns.yaml").Option("missingkey=error").Parse(clusterDNSManifest)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = t.Execute(&b, map[string]string{"Image": idx.Names.CoreDNS, "IP": c.ClusterDNSIP(), "Domain": ClusterDomain})
	return b.Bytes(), err
}

// ClusterDNSManifestPath is the rendered manifest InstallClusterDNS applied.
func (c *Config) ClusterDNSManifestPath() string { return c.path("clusterdns.yaml") }

// InstallClusterDNS applies the cluster DNS (ClusterDNSManifest) with
// kubectl and waits until every CoreDNS replica is ready and the kube-dns
// Service has their endpoints. It needs a network plugin and a service
// proxy on the nodes (InstallSeine first).
func (c *Config) InstallClusterDNS(ctx context.Context, log *slog.Logger) error {
	if c.Kubelet != KubeletReal {
		return fmt.Errorf("cluster DNS runs on real nodes (lab up --kubelet real)")
	}
	idx, err := images.ReadIndex(c.ImagesDir)
	if err != nil {
		return err
	}
	manifest, err := c.ClusterDNSManifest(idx)
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.ClusterDNSManifestPath(), manifest, 0o644); err != nil {
		return err
	}
	start := time.Now()
	if out, err := c.Kubectl(ctx, "apply", "-f", c.ClusterDNSManifestPath()); err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w\n%s", c.ClusterDNSManifestPath(), err, out)
	}
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	if err := waitClusterDNS(ctx, cs, 3*time.Minute); err != nil {
		return err
	}
	log.Info("cluster DNS ready", "service", c.ClusterDNSIP(), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitClusterDNS waits until the coredns Deployment is ready and kube-dns
// has a ready endpoint for each replica, saying what is not when the time
// is up.
func waitClusterDNS(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		why := clusterDNSNotReady(ctx, cs)
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster DNS not ready after %s: %s\n%s", timeout, why,
				DescribePods(context.WithoutCancel(ctx), cs, "kube-system", "k8s-app=kube-dns"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func clusterDNSNotReady(ctx context.Context, cs kubernetes.Interface) string {
	d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return "deployment coredns: " + err.Error()
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if d.Status.ObservedGeneration < d.Generation || d.Status.ReadyReplicas < want {
		return fmt.Sprintf("deployment coredns: %d/%d ready", d.Status.ReadyReplicas, want)
	}
	slices, err := cs.DiscoveryV1().EndpointSlices("kube-system").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kube-dns"})
	if err != nil {
		return "kube-dns endpoints: " + err.Error()
	}
	var ready []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				ready = append(ready, e.Addresses...)
			}
		}
	}
	if int32(len(ready)) < want {
		return fmt.Sprintf("service kube-dns: ready endpoints [%s], want %d", strings.Join(ready, " "), want)
	}
	return ""
}
