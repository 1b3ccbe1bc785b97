package apiserver

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Without --tls-cert-file the controller signs its serving certificate
// itself at start, with a CA made for the purpose and kept in memory only.
// The kube-apiserver's aggregator must trust that CA to proxy
// controlplane.seine.io to the controller, so the controller publishes it
// as the caBundle of its APIService (--apiservice) and keeps it there: a
// restart brings a new CA, and an install that re-applies the APIService
// must not leave it untrusted. This replaces insecureSkipTLSVerify, which
// lets anything that can take over the Service's endpoints read every
// agent's policies and feed them its own. The kube-apiserver calls the
// admission webhook of crd.seine.io (core/admission, served by the same
// server) through the same Service, so the same CA is kept as the
// caBundle of its ValidatingWebhookConfiguration
// (--validating-webhook-configuration).

// APIServiceGVR is the resource of APIService objects.
var APIServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

const (
	caBundleCheckEvery = time.Minute
	caBundleRetryMax   = 30 * time.Second
)

// SelfSignedCA returns the PEM of the CA that signed the serving
// certificate when the server generated it itself, or nil when a
// certificate was given (--tls-cert-file): its issuer is then not the
// controller's to publish.
func (s *Server) SelfSignedCA() []byte { return s.selfSignedCA }

// caFromChain keeps the CA certificates of a PEM chain (the generated
// certificate is followed by the CA that signed it).
func caFromChain(chain []byte) ([]byte, error) {
	var out bytes.Buffer
	for rest := chain; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("serving certificate chain: %w", err)
		}
		if c.IsCA {
			if err := pem.Encode(&out, b); err != nil {
				return nil, err
			}
		}
	}
	if out.Len() == 0 {
		return nil, errors.New("serving certificate chain holds no CA certificate")
	}
	return out.Bytes(), nil
}

// PublishCABundle makes the APIService name trust ca (and stop skipping TLS
// verification), then checks it every minute until ctx ends, setting it
// again when it differs. Failures (the APIService not created yet, a
// transient error) are retried with a back-off up to 30 s.
func PublishCABundle(ctx context.Context, dc dynamic.Interface, name string, ca []byte, log *slog.Logger) {
	keepPublished(ctx, func(ctx context.Context) (bool, error) { return ensureCABundle(ctx, dc, name, ca) }, log.With("apiservice", name))
}

// PublishWebhookCABundle does for every webhook of the
// ValidatingWebhookConfiguration name what PublishCABundle does for an
// APIService: the kube-apiserver verifies the controller with that CA
// when it calls the admission webhook (core/admission).
func PublishWebhookCABundle(ctx context.Context, dc dynamic.Interface, name string, ca []byte, log *slog.Logger) {
	keepPublished(ctx, func(ctx context.Context) (bool, error) { return ensureWebhookCABundle(ctx, dc, name, ca) }, log.With("validatingwebhookconfiguration", name))
}

// keepPublished calls ensure until ctx ends: every minute, or after a
// failure with a back-off up to 30 s.
func keepPublished(ctx context.Context, ensure func(context.Context) (bool, error), log *slog.Logger) {
	var backoff time.Duration
	for {
		delay := caBundleCheckEvery
		changed, err := ensure(ctx)
		switch {
		case err != nil:
			backoff = min(max(2*backoff, time.Second), caBundleRetryMax)
			delay = backoff
			log.Warn("publishing the serving CA", "err", err, "retry_in", delay)
		case changed:
			backoff = 0
			log.Info("published the serving CA")
		default:
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// ValidatingWebhookConfigurationGVR is the resource of
// ValidatingWebhookConfiguration objects.
var ValidatingWebhookConfigurationGVR = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}

// ensureWebhookCABundle sets the caBundle of every webhook of the
// ValidatingWebhookConfiguration name to ca unless it is already, and
// reports whether it changed it.
func ensureWebhookCABundle(ctx context.Context, dc dynamic.Interface, name string, ca []byte) (bool, error) {
	r := dc.Resource(ValidatingWebhookConfigurationGVR)
	vwc, err := r.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return false, fmt.Errorf("validatingwebhookconfiguration %s does not exist (yet)", name)
		}
		return false, err
	}
	want := base64.StdEncoding.EncodeToString(ca)
	hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	changed := false
	for _, h := range hooks {
		m, ok := h.(map[string]any)
		if !ok {
			continue
		}
		if have, _, _ := unstructured.NestedString(m, "clientConfig", "caBundle"); have != want {
			if err := unstructured.SetNestedField(m, want, "clientConfig", "caBundle"); err != nil {
				return false, err
			}
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	if err := unstructured.SetNestedSlice(vwc.Object, hooks, "webhooks"); err != nil {
		return false, err
	}
	// The update carries the resourceVersion read: it fails rather than
	// overwrite a concurrent change; the next round reads it again.
	if _, err := r.Update(ctx, vwc, metav1.UpdateOptions{FieldManager: "seine-controller"}); err != nil {
		return false, fmt.Errorf("validatingwebhookconfiguration %s: %w", name, err)
	}
	return true, nil
}

// ensureCABundle sets the APIService's caBundle to ca unless it is already
// (and insecureSkipTLSVerify is off), and reports whether it changed it.
func ensureCABundle(ctx context.Context, dc dynamic.Interface, name string, ca []byte) (bool, error) {
	as, err := dc.Resource(APIServiceGVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return false, fmt.Errorf("apiservice %s does not exist (yet)", name)
		}
		return false, err
	}
	want := base64.StdEncoding.EncodeToString(ca)
	have, _, _ := unstructured.NestedString(as.Object, "spec", "caBundle")
	insecure, _, _ := unstructured.NestedBool(as.Object, "spec", "insecureSkipTLSVerify")
	if have == want && !insecure {
		return false, nil
	}
	// The resourceVersion makes the patch fail rather than overwrite a
	// concurrent change; the next round reads it again.
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": as.GetResourceVersion()},
		"spec":     map[string]any{"caBundle": want, "insecureSkipTLSVerify": false},
	})
	if err != nil {
		return false, err
	}
	if _, err := dc.Resource(APIServiceGVR).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "seine-controller"}); err != nil {
		return false, fmt.Errorf("apiservice %s: %w", name, err)
	}
	return true, nil
}
