package agent

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// NewBackendFunc is a platform backend's constructor (linux.New, ...),
// chosen by services/seine-agent's main for its OS.
type NewBackendFunc func(platform.Config) (platform.Backend, error)

// RunWithConfig connects the agent's collaborators from cfg and runs the
// agent until ctx ends: the whole of `seine-agent run`.
func RunWithConfig(ctx context.Context, log *slog.Logger, cfg *Config, newBackend NewBackendFunc) error {
	klog.SetSlogLogger(log.With("component", "client-go"))
	kube, rc, err := kubeClient(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	var db *ovsdb.Client
	if err := retry(ctx, log, "connect to OVSDB", func(ctx context.Context) error {
		var err error
		db, err = ovsdb.Connect(ctx, ovsdb.Config{Endpoint: cfg.OVS.DBEndpoint, Logger: log.With("component", "ovsdb")})
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
	a, err := New(Options{Config: cfg, Logger: log, Kube: kube, OVSDB: db, Backend: backend, ControlPlane: rc})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func kubeClient(kubeconfig string) (kubernetes.Interface, *rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
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
