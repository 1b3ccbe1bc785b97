package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	certutil "k8s.io/client-go/util/cert"

	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/metrics"
)

// serveMetrics serves /metrics and the node's part of a support bundle
// (/supportbundle, supportbundle.go) on addr over HTTPS to clients the
// kube-apiserver authenticates and authorizes (Config.MetricsAddress).
func (a *Agent) serveMetrics(addr string) (stop func(), err error) {
	cert, err := a.metricsCert()
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	api := http.NewServeMux()
	api.Handle("GET /metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	api.Handle("GET "+bundle.Path, a.supportBundleHandler())
	// Each path is authorized on its own: a client needs get on /metrics
	// or on /supportbundle (seine-metrics-reader, seine-supportbundle).
	h, err := metrics.Authorized(a.kube.AuthenticationV1(), a.kube.AuthorizationV1(), api)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.Handle("GET "+bundle.Path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics endpoint", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// metricsCert is the configured serving certificate, or one the agent
// signs itself for its node name and the address it serves on.
func (a *Agent) metricsCert() (tls.Certificate, error) {
	if a.cfg.MetricsTLSCertFile != "" {
		return tls.LoadX509KeyPair(a.cfg.MetricsTLSCertFile, a.cfg.MetricsTLSKeyFile)
	}
	var ips []net.IP
	if host, _, err := net.SplitHostPort(a.cfg.MetricsAddress); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			ips = append(ips, ip)
		}
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(a.cfg.NodeName, ips, nil)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}
