package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
)

// kubeProxyModesEnv lists the kube-proxy modes TestServicesKubeProxy runs
// (space-separated); make test runs iptables only (about 35 s a mode):
//
//	SEINE_E2E_KUBE_PROXY_MODES="iptables nftables" go test -run TestServicesKubeProxy ./test/e2e
const kubeProxyModesEnv = "SEINE_E2E_KUBE_PROXY_MODES"

// TestServicesKubeProxy: with kube-proxy (built from the control plane's
// release) on every node and seine-agent in its kube-proxy mode, the same
// Service matrix passes, and NetworkPolicy still sees the endpoint: an
// "allow DNS to kube-dns only" egress policy lets name resolution through
// the DNS Service and nothing else.
func TestServicesKubeProxy(t *testing.T) {
	modes := []string{lab.KubeProxyIPTables}
	if v := os.Getenv(kubeProxyModesEnv); v != "" {
		modes = strings.Fields(v)
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			e := upLabWith(t, labtest.Options{TrafficMode: "encap", TunnelType: "geneve", KubeProxy: mode})
			pods := e.deploy("web", 3)
			e.checkServices(pods, "web")
			e.checkDNSPolicy()
		})
	}
}
