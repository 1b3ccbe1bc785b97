package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// NewBackendFunc is a platform backend's constructor (linux.New, ...),
// chosen by services/seine-agent's main for its OS.
type NewBackendFunc func(platform.Config) (platform.Backend, error)

// RunWithConfig connects the agent's collaborators from cfg and runs the
// agent until ctx ends: the whole of `seine-agent run`.
func RunWithConfig(ctx context.Context, log *slog.Logger, cfg *Config, newBackend NewBackendFunc) error {
	// The agent's latest log lines, for its part of a support bundle:
	// wherever its log goes (a pod's stderr, a service's file), the bundle
	// has it.
	recent := bundle.NewLogRing(bundle.DefaultLogRingBytes)
	log = slog.New(recent.Handler(log.Handler()))
	klog.SetSlogLogger(log.With("component", "client-go"))
	if p := cfg.gcPercent(os.Getenv); p > 0 {
		debug.SetGCPercent(p)
		log.Info("garbage collector target", "gcPercent", p)
	}
	kube, rc, err := kubeClient(cfg.Kubeconfig, cfg.KubeAPIServer)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var db *ovsdb.Client
	if err := retry(ctx, log, "connect to OVSDB", func(ctx context.Context) error {
		var err error
		db, err = ovsdb.Connect(ctx, ovsdb.Config{Endpoint: cfg.OVS.DBEndpoint, Logger: log.With("component", "ovsdb"),
			Metrics: reg, MetricsNamespace: metrics.LibOVSDBNamespace, MetricsSubsystem: metrics.LibOVSDBSubsystem})
		return err
	}); err != nil {
		return err
	}
	defer db.Close()
	backend, err := newBackend(platform.Config{
		Logger: log.With("component", "backend"), OVSDB: db,
		Datapath: cfg.datapath(), OVSRunDir: cfg.OVS.RunDir,
	})
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer backend.Close()
	a, err := New(Options{Config: cfg, Logger: log, Kube: kube, OVSDB: db, Backend: backend, ControlPlane: rc, Metrics: reg, RecentLog: recent})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func kubeClient(kubeconfig, apiServer string) (kubernetes.Interface, *rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = InClusterConfig(apiServer)
	} else {
		rc, err = clientcmd.BuildConfigFromFlags(apiServer, kubeconfig)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.UserAgent = "seine-agent"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kube client: %w", err)
	}
	return cs, rc, nil
}

// InClusterConfig is rest.InClusterConfig with the API server's address
// replaced by apiServer when it is set: without kube-proxy the in-cluster
// address (the kubernetes Service's cluster IP, from
// KUBERNETES_SERVICE_HOST) is served by Seine's own proxy, which is not
// running yet when the agent starts.
func InClusterConfig(apiServer string) (*rest.Config, error) {
	if apiServer == "" {
		return rest.InClusterConfig()
	}
	u, err := url.Parse(apiServer)
	if err != nil {
		return nil, err
	}
	// rest.InClusterConfig reads the host from the environment; give it
	// the override so the service account's token and CA still apply.
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("kubeAPIServer %q: %w", apiServer, err)
	}
	os.Setenv("KUBERNETES_SERVICE_HOST", host)
	os.Setenv("KUBERNETES_SERVICE_PORT", port)
	return rest.InClusterConfig()
}
