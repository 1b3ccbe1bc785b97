package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	certutil "k8s.io/client-go/util/cert"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/controller"
)

// TestSelfSignedCertificateVerifiesAsTheService: without a certificate the
// server signs its own, valid for the Service's DNS name, and SelfSignedCA
// is what a client must trust to verify it under that name, as the
// aggregator does. With a certificate given there is no CA to publish.
func TestSelfSignedCertificateVerifiesAsTheService(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.SecureServing.Listener = ln
	o.SecureServing.BindPort = ln.Addr().(*net.TCPAddr).Port
	o.Authentication.RemoteKubeConfigFileOptional = true
	o.Authentication.SkipInClusterLookup = true
	o.Authorization.RemoteKubeConfigFileOptional = true
	o.Service = "kube-system/seine-controller"
	st := Stores{
		NetworkPolicies: controller.NewStore[*cp.NetworkPolicy](),
		AppliedToGroups: controller.NewStore[*cp.AppliedToGroup](),
		AddressGroups:   controller.NewStore[*cp.AddressGroup](),
		Ready:           func() bool { return true },
	}
	s, err := New(o, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ca := s.SelfSignedCA()
	if ca == nil {
		t.Fatal("no self-signed CA")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("SelfSignedCA is not PEM: %q", ca)
	}
	dial := func(name string, roots *x509.CertPool) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: name, RootCAs: roots})
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, name := range []string{"seine-controller.kube-system.svc", "seine-controller.kube-system.svc.cluster.local"} {
		if err := dial(name, pool); err != nil {
			t.Errorf("TLS as %s, trusting SelfSignedCA: %v", name, err)
		}
	}
	if err := dial("seine-controller.other.svc", pool); err == nil {
		t.Error("the certificate is valid for another Service's name")
	}
	if err := dial("seine-controller.kube-system.svc", x509.NewCertPool()); err == nil {
		t.Error("the certificate verifies without its CA")
	}

	given := NewOptions()
	cert, key, err := certutil.GenerateSelfSignedCertKey("given", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := certutil.WriteCert(dir+"/tls.crt", cert); err != nil {
		t.Fatal(err)
	}
	if err := certutil.WriteCert(dir+"/tls.key", key); err != nil {
		t.Fatal(err)
	}
	given.SecureServing.ServerCert.CertKey.CertFile, given.SecureServing.ServerCert.CertKey.KeyFile = dir+"/tls.crt", dir+"/tls.key"
	given.SecureServing.BindPort = 0
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	given.SecureServing.Listener = ln2
	given.Authentication.RemoteKubeConfigFileOptional = true
	given.Authentication.SkipInClusterLookup = true
	given.Authorization.RemoteKubeConfigFileOptional = true
	s2, err := New(given, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if s2.SelfSignedCA() != nil {
		t.Error("a CA to publish although the certificate was given")
	}
}

func TestServiceFlag(t *testing.T) {
	for _, bad := range []string{"seine-controller", "/x", "x/", "a/b/c"} {
		o := NewOptions()
		o.Service = bad
		if _, err := o.serviceDNSNames(); err == nil {
			t.Errorf("--service %q accepted", bad)
		}
	}
}

func TestCAFromChain(t *testing.T) {
	cert, _, err := certutil.GenerateSelfSignedCertKey("host", nil, []string{"a.b.svc"})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := caFromChain(cert)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certutil.ParseCertsPEM(ca)
	if err != nil || len(certs) != 1 || !certs[0].IsCA {
		t.Fatalf("caFromChain kept %d certificates (%v), want the one CA", len(certs), err)
	}
	leaf, _ := certutil.ParseCertsPEM(cert)
	if _, err := caFromChain(certPEM(t, leaf[0])); err == nil {
		t.Error("a chain without a CA gave no error")
	}
}

func certPEM(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	b, err := certutil.EncodeCertificates(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEnsureCABundle: an APIService registered with insecureSkipTLSVerify
// (or another CA) gets the CA and verification back on; one already right
// is left alone; a missing one is an error to retry.
func TestEnsureCABundle(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	as := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1beta1.controlplane.seine.io", "resourceVersion": "1"},
		"spec": map[string]any{
			"group": "controlplane.seine.io", "version": "v1beta1",
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": "kube-system", "name": "seine-controller"},
		},
	}}
	dc := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{APIServiceGVR: "APIServiceList"}, as)
	ctx := context.Background()
	changed, err := ensureCABundle(ctx, dc, "v1beta1.controlplane.seine.io", ca)
	if err != nil || !changed {
		t.Fatalf("first ensure: changed %v, %v", changed, err)
	}
	got, err := dc.Resource(APIServiceGVR).Get(ctx, "v1beta1.controlplane.seine.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, _ := unstructured.NestedString(got.Object, "spec", "caBundle")
	insecure, _, _ := unstructured.NestedBool(got.Object, "spec", "insecureSkipTLSVerify")
	if bundle != base64.StdEncoding.EncodeToString(ca) || insecure {
		t.Errorf("caBundle %q insecureSkipTLSVerify %v after the ensure", bundle, insecure)
	}
	if svc, _, _ := unstructured.NestedString(got.Object, "spec", "service", "name"); svc != "seine-controller" {
		t.Errorf("the patch lost the rest of the spec: %v", got.Object["spec"])
	}
	changed, err = ensureCABundle(ctx, dc, "v1beta1.controlplane.seine.io", ca)
	if err != nil || changed {
		t.Errorf("second ensure: changed %v, %v; want nothing to do", changed, err)
	}
	if _, err := ensureCABundle(ctx, dc, "v1beta1.other.seine.io", ca); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing APIService: %v", err)
	}
}

// TestEnsureWebhookCABundle: every webhook of the
// ValidatingWebhookConfiguration gets the CA, the rest of it stays; one
// already right is left alone; a missing one is an error to retry.
func TestEnsureWebhookCABundle(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	hook := func(name string) map[string]any {
		return map[string]any{"name": name, "sideEffects": "None", "clientConfig": map[string]any{
			"service": map[string]any{"namespace": "kube-system", "name": "seine-controller", "path": "/validate/crd.seine.io"},
		}}
	}
	vwc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
		"metadata": map[string]any{"name": "seine", "resourceVersion": "1"},
		"webhooks": []any{hook("a.crd.seine.io"), hook("b.crd.seine.io")},
	}}
	dc := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{ValidatingWebhookConfigurationGVR: "ValidatingWebhookConfigurationList"}, vwc)
	ctx := context.Background()
	if changed, err := ensureWebhookCABundle(ctx, dc, "seine", ca); err != nil || !changed {
		t.Fatalf("first ensure: changed %v, %v", changed, err)
	}
	got, err := dc.Resource(ValidatingWebhookConfigurationGVR).Get(ctx, "seine", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hooks, _, _ := unstructured.NestedSlice(got.Object, "webhooks")
	for _, h := range hooks {
		m := h.(map[string]any)
		bundle, _, _ := unstructured.NestedString(m, "clientConfig", "caBundle")
		path, _, _ := unstructured.NestedString(m, "clientConfig", "service", "path")
		if bundle != base64.StdEncoding.EncodeToString(ca) || path != "/validate/crd.seine.io" || m["sideEffects"] != "None" {
			t.Errorf("webhook %v after the ensure: caBundle %q, path %q, %v", m["name"], bundle, path, m)
		}
	}
	if len(hooks) != 2 {
		t.Errorf("%d webhooks after the ensure, want 2", len(hooks))
	}
	if changed, err := ensureWebhookCABundle(ctx, dc, "seine", ca); err != nil || changed {
		t.Errorf("second ensure: changed %v, %v; want nothing to do", changed, err)
	}
	if _, err := ensureWebhookCABundle(ctx, dc, "other", ca); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing ValidatingWebhookConfiguration: %v", err)
	}
}
