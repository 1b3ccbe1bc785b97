package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func (c *Config) pki(name string) string { return filepath.Join(c.PKIDir(), name) }

// APIListens are the api proxy's addresses: 127.0.0.1:<api port> in every
// node's namespace (how the lab's own components and Seine's pods reach the
// apiserver whatever the data path does) and the advertised address
// APIAdvertiseIP:<api port> in node-1's (how pods reach it through the
// "kubernetes" Service).
func (c *Config) APIListens() []ProxyListen {
	port := strconv.Itoa(c.APIPort)
	var ls []ProxyListen
	for _, n := range c.NodeList() {
		ls = append(ls, ProxyListen{NetNS: c.NetNSPath(n.Name), Addr: "127.0.0.1:" + port})
	}
	return append(ls, ProxyListen{NetNS: c.NetNSPath(c.NodeList()[0].Name), Addr: net.JoinHostPort(c.APIAdvertiseIP(), port)})
}

func (c *Config) etcdURL() string { return "http://127.0.0.1:" + strconv.Itoa(c.EtcdPort) }

func (c *Config) controlPlane() []component {
	kube := func(name string, args ...string) component {
		return component{name: name, argv: append([]string{c.KubeBin, name}, args...)}
	}
	peer := "http://127.0.0.1:" + strconv.Itoa(c.EtcdPort+1)
	return []component{
		kube("etcd",
			"--name=lab", "--data-dir="+filepath.Join(c.StateDir, "etcd"),
			"--listen-client-urls="+c.etcdURL(), "--advertise-client-urls="+c.etcdURL(),
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
			"--initial-cluster=lab="+peer, "--log-level=warn",
			// The lab's data is thrown away at `lab down`; durability buys nothing.
			"--unsafe-no-fsync"),
		kube("kube-apiserver",
			"--etcd-servers="+c.etcdURL(),
			"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.APIPort),
			// The apiserver listens on the machine's loopback only, and
			// advertises node-1's address: the lab's api proxy serves it
			// there (APIListens), as a kubeadm control-plane node serves
			// its apiserver at its own address. The apiserver's lease
			// reconciler (the default) keeps the "kubernetes" Service's
			// Endpoints and EndpointSlice on it, so pods reach the API at
			// 10.96.0.1:443 through the cluster's service proxy.
			"--advertise-address="+c.APIAdvertiseIP(),
			"--tls-cert-file="+c.pki("apiserver.crt"), "--tls-private-key-file="+c.pki("apiserver.key"),
			"--client-ca-file="+c.pki("ca.crt"),
			"--token-auth-file="+c.pki("tokens.csv"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+c.pki("sa.pub"),
			"--service-account-signing-key-file="+c.pki("sa.key"),
			"--service-cluster-ip-range="+c.ServiceCIDR,
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			// API aggregation (controlplane.seine.io is served by
			// seine-controller): the aggregator authenticates to aggregated
			// servers with the front-proxy client certificate and reaches
			// them at their Service's endpoints, not its ClusterIP (there
			// is no kube-proxy on the machine).
			"--requestheader-client-ca-file="+c.pki("front-proxy-ca.crt"),
			"--requestheader-allowed-names="+frontProxyClient,
			"--requestheader-username-headers=X-Remote-User",
			"--requestheader-group-headers=X-Remote-Group",
			"--requestheader-extra-headers-prefix=X-Remote-Extra-",
			"--proxy-client-cert-file="+c.pki("front-proxy-client.crt"),
			"--proxy-client-key-file="+c.pki("front-proxy-client.key"),
			"--enable-aggregator-routing=true",
			// Kubelets, pods and aggregated servers are reached through
			// the lab's egress proxy (egress_linux.go), kubelets with
			// certificates of the lab CA both ways.
			"--egress-selector-config-file="+c.egressSelectorConfigPath(),
			"--kubelet-client-certificate="+c.pki("kubelet-client.crt"),
			"--kubelet-client-key="+c.pki("kubelet-client.key"),
			"--kubelet-certificate-authority="+c.pki("ca.crt"),
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--profiling=false"),
		kube("kube-controller-manager",
			"--kubeconfig="+c.KubeconfigPath("kube-controller-manager"),
			"--authentication-kubeconfig="+c.KubeconfigPath("kube-controller-manager"),
			"--authorization-kubeconfig="+c.KubeconfigPath("kube-controller-manager"),
			"--bind-address=127.0.0.1", "--secure-port=0",
			"--leader-elect=false",
			"--allocate-node-cidrs=true",
			"--cluster-cidr="+c.ClusterCIDR,
			"--node-cidr-mask-size="+strconv.Itoa(c.NodeCIDRMaskSize),
			"--service-cluster-ip-range="+c.ServiceCIDR,
			"--root-ca-file="+c.pki("ca.crt"),
			"--service-account-private-key-file="+c.pki("sa.key"),
			"--use-service-account-credentials=true",
			"--profiling=false"),
		kube("kube-scheduler",
			"--kubeconfig="+c.KubeconfigPath("kube-scheduler"),
			"--authentication-kubeconfig="+c.KubeconfigPath("kube-scheduler"),
			"--authorization-kubeconfig="+c.KubeconfigPath("kube-scheduler"),
			"--bind-address=127.0.0.1", "--secure-port=0",
			"--leader-elect=false", "--profiling=false"),
	}
}

// waitHTTP polls url until it answers 200 or the component dies.
func (c *Config) waitHTTP(ctx context.Context, comp, url string, client *http.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if c.componentPID(comp) == 0 {
			return fmt.Errorf("%s exited:\n%s", comp, c.logTail(comp, 15))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s after %s: %s", comp, url, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// adminHTTP is an HTTP client that trusts the lab CA and presents the admin
// token, for readiness probes.
func (c *Config) adminHTTP() (*http.Client, error) {
	ca, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// startControlPlane starts etcd, kube-apiserver, the API proxy,
// kube-controller-manager and kube-scheduler, each once the previous one it
// depends on is ready.
func (c *Config) startControlPlane(ctx context.Context) error {
	comps := c.controlPlane()
	if err := os.WriteFile(c.egressSelectorConfigPath(), []byte(c.egressSelectorConfig()), 0o644); err != nil {
		return err
	}
	if err := c.startComponent(comps[0]); err != nil {
		return err
	}
	plain := &http.Client{Timeout: 2 * time.Second}
	if err := c.waitHTTP(ctx, "etcd", c.etcdURL()+"/health", plain, 60*time.Second); err != nil {
		return err
	}
	if err := c.startComponent(comps[1]); err != nil {
		return err
	}
	tlsClient, err := c.adminHTTP()
	if err != nil {
		return err
	}
	// /readyz is open to anonymous users through the system:public-info-viewer role.
	if err := c.waitHTTP(ctx, "kube-apiserver", c.APIServerURL()+"/readyz", tlsClient, 120*time.Second); err != nil {
		return err
	}
	if err := c.startComponent(component{name: "api-proxy", argv: []string{c.LabBin, "api-proxy", "--state-dir", c.StateDir}}); err != nil {
		return err
	}
	for _, comp := range comps[2:] {
		if err := c.startComponent(comp); err != nil {
			return err
		}
	}
	return nil
}

// logTail returns the last n lines of a component's log, for errors: a
// failed `lab up` removes the state directory and the logs with it.
func (c *Config) logTail(comp string, n int) string {
	b, _ := os.ReadFile(filepath.Join(c.LogDir(), comp+".log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
