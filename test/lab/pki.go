package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PrometheusUser is the lab identity Prometheus scrapes seine-controller
// as (StartPrometheus); it may get /metrics and nothing else.
const PrometheusUser = "seine:prometheus"

// identity is a user of the lab's kube-apiserver, authenticated by a static
// token (kube-apiserver's --token-auth-file).
type identity struct {
	name   string // kubeconfig file name
	user   string
	groups []string
}

func (c *Config) identities() []identity {
	ids := []identity{
		{"admin", "lab-admin", []string{"system:masters"}},
		{"kube-controller-manager", "system:kube-controller-manager", nil},
		{"kube-scheduler", "system:kube-scheduler", nil},
		// seine-agent's identity; its permissions come from the
		// seine-agent ClusterRole the lab creates (see agent_linux.go).
		{"seine-agent", "seine:agent", nil},
		// seine-controller's identity: reads pods, namespaces and policies,
		// and delegates its clients' authentication and authorization
		// (see controller_linux.go).
		{"seine-controller", "seine:controller", nil},
		// kube-proxy's identity: the built-in system:node-proxier binding
		// names this user.
		{"kube-proxy", "system:kube-proxy", nil},
		// Prometheus' identity: get on /metrics (controller_linux.go).
		{"prometheus", PrometheusUser, nil},
	}
	for _, n := range c.NodeList() {
		ids = append(ids, identity{n.Name, "system:node:" + n.Name, []string{"system:nodes"}})
	}
	return ids
}

// writePKI creates the CA, the apiserver's serving certificate, the service
// account key pair, the token file and one kubeconfig per identity.
func (c *Config) writePKI() error {
	dir := c.PKIDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.AdminKubeconfig()), 0o700); err != nil {
		return err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "seine-lab-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	svcIP, err := firstServiceIP(c.ServiceCIDR)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IP(svcIP.AsSlice()), net.ParseIP(c.APIAdvertiseIP())},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	// Service account tokens are signed with RSA, which every client verifies.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	caKeyDER, _ := x509.MarshalECPrivateKey(caKey)
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	files := map[string][]byte{
		"ca.crt":        pemBlock("CERTIFICATE", caDER),
		"ca.key":        pemBlock("EC PRIVATE KEY", caKeyDER),
		"apiserver.crt": pemBlock("CERTIFICATE", srvDER),
		"apiserver.key": pemBlock("EC PRIVATE KEY", srvKeyDER),
		"sa.key":        pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)),
		"sa.pub":        pemBlock("PUBLIC KEY", saPub),
	}
	var tokens strings.Builder
	for _, id := range c.identities() {
		tok := randomHex(16)
		fmt.Fprintf(&tokens, "%s,%s,%s,\"%s\"\n", tok, id.user, id.user, strings.Join(id.groups, ","))
		if err := os.WriteFile(c.KubeconfigPath(id.name), c.kubeconfig(id.user, tok, files["ca.crt"]), 0o600); err != nil {
			return err
		}
	}
	files["tokens.csv"] = []byte(tokens.String())
	if err := c.aggregationPKI(files, caCert, caKey); err != nil {
		return err
	}
	if err := c.kubeletPKI(files, caCert, caKey); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) kubeconfig(user, token string, caPEM []byte) []byte {
	// The CA is embedded so a kubeconfig can be copied off the machine's
	// state directory and still work.
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: seine-lab
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: seine-lab
  context:
    cluster: seine-lab
    user: %s
current-context: seine-lab
`, c.APIServerURL(), b64(caPEM), user, token, user)
}

// firstServiceIP is the ClusterIP of the "kubernetes" Service.
func firstServiceIP(cidr string) (netip.Addr, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Addr{}, err
	}
	return p.Masked().Addr().Next(), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// aggregationPKI adds what API aggregation needs: a front-proxy CA and the
// client certificate kube-apiserver presents to aggregated API servers
// (which trust the X-Remote-User/Group headers only from it), and
// seine-controller's serving certificate, signed by the lab CA for
// ControllerIP (the APIService carries the lab CA as its caBundle).
func (c *Config) aggregationPKI(files map[string][]byte, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	fpKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	fpTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "seine-lab-front-proxy-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	fpDER, err := x509.CreateCertificate(rand.Reader, fpTmpl, fpTmpl, &fpKey.PublicKey, fpKey)
	if err != nil {
		return err
	}
	fpCA, _ := x509.ParseCertificate(fpDER)
	files["front-proxy-ca.crt"] = pemBlock("CERTIFICATE", fpDER)
	issue := func(name string, signer *x509.Certificate, signerKey *ecdsa.PrivateKey, tmpl *x509.Certificate) error {
		return issueCert(files, name, signer, signerKey, tmpl)
	}
	if err := issue("front-proxy-client", fpCA, fpKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: frontProxyClient},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return err
	}
	return issue("seine-controller", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "seine-controller"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{controllerService + "." + controllerNamespace + ".svc"},
		IPAddresses: []net.IP{net.ParseIP(c.ControllerIP())},
	})
}

// issueCert signs a certificate of tmpl (subject, usages, names) for a new
// key and adds both to files as <name>.crt and <name>.key.
func issueCert(files map[string][]byte, name string, signer *x509.Certificate, signerKey *ecdsa.PrivateKey, tmpl *x509.Certificate) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial(), now, now.Add(365*24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files[name+".crt"], files[name+".key"] = pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER)
	return nil
}

// kubeletClientUser is who kube-apiserver is to the kubelets (its
// --kubelet-client-certificate); the lab binds it to the built-in
// system:kubelet-api-admin role, as kubeadm does.
const kubeletClientUser = "kube-apiserver-kubelet-client"

// kubeletPKI adds the certificates of the kubelet API: the client
// certificate kube-apiserver presents to kubelets (exec, logs,
// port-forward) and each node's serving certificate for its address and
// name, both from the lab CA, so each side verifies the other.
func (c *Config) kubeletPKI(files map[string][]byte, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	if err := issueCert(files, "kubelet-client", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: kubeletClientUser},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return err
	}
	for _, n := range c.NodeList() {
		if err := issueCert(files, "kubelet-"+n.Name, ca, caKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: n.Name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:    []string{n.Name},
			IPAddresses: []net.IP{net.ParseIP(n.IP)},
		}); err != nil {
			return err
		}
	}
	return nil
}
