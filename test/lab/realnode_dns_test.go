//go:build linux

package lab

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// clusterDNS proves the "kubernetes" Service and the cluster DNS on real
// nodes with Seine: the apiserver keeps default/kubernetes's Endpoints and
// EndpointSlice on its advertised address (node-1's, where the lab's api
// proxy serves it); InstallClusterDNS brings CoreDNS up, which is ready only
// once it has listed Services through 10.96.0.1 with its ServiceAccount
// token; then a pod (pods[0], Seine's image: busybox) resolves
// kubernetes.default.svc.cluster.local and a Service of its own by its full
// and its short name (the search path the kubelet wrote), reaches that
// Service by name and the apiserver by kubernetes.default.svc:443, and
// gets no answer for a name outside the cluster (nothing is forwarded).
func clusterDNS(t *testing.T, ctx context.Context, c *Config, pods []corev1.Pod) {
	cs, err := c.Client("admin")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := c.APIAdvertiseIP() + ":" + strconv.Itoa(c.APIPort)
	var got []string
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			for _, p := range s.Ports {
				got = append(got, a.IP+":"+strconv.Itoa(int(p.Port)))
			}
		}
	}
	if strings.Join(got, " ") != want {
		t.Errorf("endpoints default/kubernetes: %v, want %s", got, want)
	}
	slices, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			for _, p := range s.Ports {
				got = append(got, strings.Join(e.Addresses, ",")+":"+strconv.Itoa(int(*p.Port)))
			}
		}
	}
	if strings.Join(got, " ") != want {
		t.Errorf("endpointslices of default/kubernetes: %v, want %s", got, want)
	}

	start := time.Now()
	if err := c.InstallClusterDNS(ctx, testLogger(t)); err != nil {
		t.Fatalf("install the cluster DNS: %v\n%s", err, c.realNodeLogs(ctx))
	}
	t.Logf("cluster DNS ready in %s", time.Since(start).Round(time.Millisecond))

	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubernetesIP := netip.MustParsePrefix(c.ServiceCIDR).Masked().Addr().Next().String()
	client := pods[0].Name
	exec := func(script string) (string, error) {
		return c.Kubectl(ctx, "exec", client, "--", "sh", "-c", script)
	}
	// CoreDNS learns a new Service from its watch: allow it a few seconds.
	retry := func(what string, ok func() (string, bool)) {
		t.Helper()
		var out string
		for deadline := time.Now().Add(30 * time.Second); ; {
			var done bool
			if out, done = ok(); done {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %s", what, out)
				return
			}
			time.Sleep(time.Second)
		}
	}
	for name, ip := range map[string]string{
		"kubernetes.default.svc." + ClusterDomain: kubernetesIP,
		"web.default.svc." + ClusterDomain:        svc.Spec.ClusterIP,
	} {
		retry("nslookup "+name+" from "+client+", want "+ip, func() (string, bool) {
			out, err := exec("nslookup " + name)
			return out, err == nil && strings.Contains(out, "Address: "+ip)
		})
	}
	// libc's resolver with the search path (the kubelet's resolv.conf:
	// default.svc.cluster.local first): the short name, then the Service.
	retry("nc web 80 from "+client+" (the Service by its short name)", func() (string, bool) {
		out, err := exec("nc -w 3 web 80 </dev/null")
		return out, err == nil && strings.HasPrefix(out, "web-")
	})
	// The apiserver through the kubernetes Service by its name. (CoreDNS
	// proved the rest: it is ready only once it has listed Services and
	// EndpointSlices through 10.96.0.1:443 with its ServiceAccount token,
	// verifying the apiserver's certificate against the token's CA; busybox
	// has no TLS client this apiserver accepts.)
	// Plain HTTP to it gets Go's answer to HTTP on an HTTPS port.
	retry("kubernetes.default.svc:443 from "+client, func() (string, bool) {
		out, _ := exec(`printf 'GET /version HTTP/1.0\r\n\r\n' | nc -w 3 kubernetes.default.svc 443`)
		return out, strings.Contains(out, "Client sent an HTTP request to an HTTPS server")
	})
	// A name outside the cluster's zones gets CoreDNS's refusal, not an
	// answer from a resolver it would have forwarded to.
	if out, _ := exec("nslookup seine-lab.example.org."); strings.Contains(out, "Name:") || !strings.Contains(out, "can't find") {
		t.Errorf("nslookup of a name outside the cluster: want CoreDNS's refusal, got\n%s", out)
	}
}
