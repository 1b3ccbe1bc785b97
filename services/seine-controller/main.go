// Command seine-controller computes Kubernetes NetworkPolicies into
// AppliedToGroups, AddressGroups and internal NetworkPolicies, each with the
// span of nodes that need it, and serves them to the agents as the API
// controlplane.seine.io/v1beta1 (see core/controller/README.md).
//
//	seine-controller [--kubeconfig <file>] [--kube-apiserver https://host:port] [--bind-address <ip>] [--secure-port <port>]
//	                 [--tls-cert-file <file> --tls-private-key-file <file>]
//	                 [--service <namespace>/<name>] [--apiservice <name>]...
//	                 [--validating-webhook-configuration <name>]
//
// Without --kubeconfig it uses the in-cluster configuration. Authentication
// and authorization of its clients are delegated to the kube-apiserver. The
// serving certificate is self-signed in memory unless one is given; it is
// then valid for the --service's DNS name, and its CA is kept as the
// caBundle of the --apiservice, so the aggregator verifies the controller,
// and of the webhooks of --validating-webhook-configuration, so the
// kube-apiserver verifies it when it calls the admission webhook of
// crd.seine.io (core/admission), which the same server serves.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/core/admission"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/controller"
	"github.com/seine-cni/seine/core/controller/apiserver"
	"github.com/seine-cni/seine/core/inventory"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/core/traceflow"
)

func main() {
	// The controller's latest log lines, for its part of a support bundle.
	recent := bundle.NewLogRing(bundle.DefaultLogRingBytes)
	log := slog.New(recent.Handler(slog.NewTextHandler(os.Stderr, nil)))
	if err := run(log, recent, os.Args[1:]); err != nil {
		log.Error("seine-controller failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, recent *bundle.LogRing, args []string) error {
	fs := pflag.NewFlagSet("seine-controller", pflag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the kube-apiserver (default: in-cluster configuration)")
	apiServer := fs.String("kube-apiserver", "", "https://host:port of the kube-apiserver, instead of the kubeconfig's or the in-cluster one "+
		"(a cluster without kube-proxy needs it: the in-cluster address is a Service's cluster IP that Seine serves)")
	opts := apiserver.NewOptions()
	opts.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts.SetKubeconfig(*kubeconfig)
	klog.SetSlogLogger(log.With("component", "k8s"))
	if *apiServer != "" && *kubeconfig == "" {
		// Every in-cluster client (ours and the delegated authentication
		// and authorization) reads the address from the environment.
		u, err := url.Parse(*apiServer)
		if err != nil || u.Scheme != "https" || u.Port() == "" {
			return fmt.Errorf("--kube-apiserver %q: want https://host:port", *apiServer)
		}
		os.Setenv("KUBERNETES_SERVICE_HOST", u.Hostname())
		os.Setenv("KUBERNETES_SERVICE_PORT", u.Port())
	}

	cfg, err := restConfig(*kubeconfig, *apiServer)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	factory := informers.NewSharedInformerFactory(cs, 0)
	ctrl, err := controller.New(factory, log.With("component", "networkpolicy"))
	if err != nil {
		return err
	}
	st := apiserver.FromController(ctrl)
	// The lookups refuse until startTiered's informers have synced.
	st.Admission = admission.Handler(ctrl.AdmissionLookup(), log.With("component", "admission"))
	st.SupportBundle = supportBundle(ctrl, recent)
	srv, err := apiserver.New(opts, st, log.With("component", "apiserver"))
	if err != nil {
		return err
	}
	trackNodes(ctrl, srv)
	tiered, err := startTiered(ctx, cfg, cs, ctrl, srv, log)
	if err != nil {
		return err
	}
	if tiered != nil {
		defer tiered.Shutdown()
	}
	// Served with the apiserver's own at /metrics, over HTTPS, authorized
	// through the kube-apiserver (nonResourceURL /metrics, verb get).
	collector, err := registerMetrics(legacyregistry.Registerer(), ctrl, srv)
	if err != nil {
		return err
	}
	if err := startInventory(ctx, cfg, cs, factory, ctrl, srv, log); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	if len(opts.APIServices) > 0 || opts.ValidatingWebhook != "" {
		if ca := srv.SelfSignedCA(); ca != nil {
			dc, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("dynamic client: %w", err)
			}
			for _, name := range opts.APIServices {
				go apiserver.PublishCABundle(ctx, dc, name, ca, log.With("component", "cabundle"))
			}
			if opts.ValidatingWebhook != "" {
				go apiserver.PublishWebhookCABundle(ctx, dc, opts.ValidatingWebhook, ca, log.With("component", "cabundle"))
			}
		} else {
			log.Info("serving certificate given: the caBundles of the APIService and the webhooks are the installer's",
				"apiservices", opts.APIServices, "validatingwebhookconfiguration", opts.ValidatingWebhook)
		}
	}

	// Traceflow's clients have a client-side limit of their own (its
	// status writes and pod lookups come in bursts: traceflow.ClientConfig).
	tfcfg := traceflow.ClientConfig(cfg)
	dyn, err := dynamic.NewForConfig(tfcfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	tcs, err := kubernetes.NewForConfig(tfcfg)
	if err != nil {
		return fmt.Errorf("traceflow kube client: %w", err)
	}
	if served, err := traceflow.Served(cs.Discovery()); err != nil || !served {
		log.Warn("traceflow off: the cluster does not serve traceflows.crd.seine.io (seine.yml installs it; restart the controller after)", "err", err)
	} else {
		tfc := traceflow.NewController(dyn, tcs, log.With("component", "traceflow"))
		collector.SetTraceflows(tfc.Running)
		go func() {
			if err := tfc.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("traceflow controller ended", "err", err)
			}
		}()
	}

	errc := make(chan error, 2)
	go func() { errc <- ctrl.Run(ctx) }()
	go func() { errc <- srv.Run(ctx) }()
	err = <-errc
	stop()
	select {
	case err2 := <-errc:
		err = errors.Join(err, err2)
	case <-time.After(30 * time.Second):
	}
	return err
}

// registerMetrics registers the controller's metrics (core/metrics) with
// reg and hands them to ctrl and srv.
func registerMetrics(reg prometheus.Registerer, ctrl *controller.Controller, srv *apiserver.Server) (*metrics.ControllerCollector, error) {
	m, err := metrics.NewController(reg)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	ctrl.SetMetrics(m)
	srv.SetMetrics(m)
	c, err := metrics.NewControllerCollector(reg, ctrl, srv)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return c, nil
}

// trackNodes makes the server drop the realization report of a node that
// is deleted, and refuse reports for nodes that do not exist, as the
// controller's Node informer (the one its nodeSelector peers follow) sees
// them.
func trackNodes(ctrl *controller.Controller, srv *apiserver.Server) {
	srv.TrackNodes(func(name string) error {
		switch exists, synced := ctrl.NodeExists(name); {
		case !synced:
			return apiserver.NodesNotSynced()
		case !exists:
			return apiserver.NodeNotFound(name)
		}
		return nil
	})
	ctrl.OnNodeDelete(srv.ForgetNode)
}

func restConfig(kubeconfig, apiServer string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (or give --kubeconfig): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags(apiServer, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}

// startTiered makes ctrl compute crd.seine.io's tiered policies when the
// cluster serves them (seine.yml installs their CustomResourceDefinitions),
// and creates the built-in tiers. Without the CRDs it says so and returns
// nil: Kubernetes NetworkPolicy works alone (installing the CRDs later
// takes a controller restart).
func startTiered(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, ctrl *controller.Controller, srv *apiserver.Server, log *slog.Logger) (dynamicinformer.DynamicSharedInformerFactory, error) {
	res, err := cs.Discovery().ServerResourcesForGroupVersion(crdv1.SchemeGroupVersion.String())
	if err != nil || !servesAll(res, crdv1.TiersResource.Resource, crdv1.ClusterNetworkPoliciesResource.Resource) {
		log.Warn("crd.seine.io is not served: tiered policy (Tier, ClusterNetworkPolicy) is off; apply seine.yml's CustomResourceDefinitions and restart", "err", err)
		return nil, nil
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	go func() {
		// Retried: the first attempt may race the admission policy's
		// start, and a lost one costs only kubectl get tiers.
		for ctx.Err() == nil {
			err := controller.EnsureBuiltInTiers(ctx, dc)
			if err == nil {
				return
			}
			log.Warn("create the built-in tiers", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
			}
		}
	}()
	f := dynamicinformer.NewDynamicSharedInformerFactory(dc, 0)
	ctrl.SetAdmissionClient(dc)
	if err := ctrl.AddTiered(f); err != nil {
		return nil, err
	}
	if servesAll(res, crdv1.NetworkPoliciesResource.Resource) {
		if err := ctrl.AddNamespacedTiered(f); err != nil {
			return nil, err
		}
	} else {
		log.Warn("crd.seine.io does not serve networkpolicies: Seine's namespaced NetworkPolicy is off; apply seine.yml's CustomResourceDefinitions and restart")
	}
	groups := servesAll(res, crdv1.ClusterGroupsResource.Resource)
	if groups {
		if err := ctrl.AddClusterGroups(f); err != nil {
			return nil, err
		}
	} else {
		log.Warn("crd.seine.io does not serve clustergroups: a policy naming a ClusterGroup fails closed; apply seine.yml's CustomResourceDefinitions and restart")
	}
	// The upstream ClusterNetworkPolicy (policy.networking.k8s.io), when
	// its CRD (shipped beside seine.yml) is installed.
	up := controller.UpstreamClusterNetworkPoliciesResource
	if res, err := cs.Discovery().ServerResourcesForGroupVersion(up.GroupVersion().String()); err == nil && servesAll(res, up.Resource) {
		if err := ctrl.AddUpstream(f); err != nil {
			return nil, err
		}
		log.Info("enforcing the upstream ClusterNetworkPolicy", "groupVersion", up.GroupVersion().String())
	} else {
		log.Info("the upstream ClusterNetworkPolicy is not served: apply its CRD (installer/kubernetes/apiext/upstream) and restart to use it", "err", err)
	}
	f.Start(ctx.Done())
	go srv.WriteTieredStatus(ctx, dc, time.Second)
	if groups {
		go ctrl.WriteClusterGroupStatus(ctx, dc, time.Second)
	}
	return f, nil
}

func servesAll(l *metav1.APIResourceList, names ...string) bool {
	for _, n := range names {
		found := false
		for _, r := range l.APIResources {
			found = found || r.Name == n
		}
		if !found {
			return false
		}
	}
	return true
}

// startInventory keeps one SeineAgentInfo per node and the
// SeineControllerInfo (core/inventory) when the cluster serves them; call
// it before factory starts.
func startInventory(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, factory informers.SharedInformerFactory,
	ctrl *controller.Controller, srv *apiserver.Server, log *slog.Logger) error {
	if ok, err := inventory.Served(cs.Discovery()); err != nil || !ok {
		log.Warn("inventory off: the cluster does not serve seineagentinfos.crd.seine.io (seine.yml installs it; restart the controller after)", "err", err)
		return nil
	}
	// Traceflow's client-side limits: creating the objects of a
	// thousand nodes at start is a burst of writes.
	dyn, err := dynamic.NewForConfig(traceflow.ClientConfig(cfg))
	if err != nil {
		return fmt.Errorf("inventory: dynamic client: %w", err)
	}
	o := inventory.ControllerOptions{NodeName: os.Getenv("NODE_NAME")}
	if ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME"); name != "" {
		o.Pod = ns + "/" + name
	}
	inv, err := inventory.NewController(dyn, factory.Core().V1().Nodes(), inventorySource{ctrl, srv}, log.With("component", "inventory"), o)
	if err != nil {
		return err
	}
	go func() {
		if err := inv.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("inventory ended", "err", err)
		}
	}()
	return nil
}

// inventorySource is the controller as core/inventory reads it.
type inventorySource struct {
	ctrl *controller.Controller
	srv  *apiserver.Server
}

func (s inventorySource) ConnectedAgents() int { return s.srv.ConnectedAgents() }

func (s inventorySource) Policy() crdv1.PolicyInfo {
	n := s.ctrl.Stored() // AppliedToGroups, AddressGroups, NetworkPolicies
	return crdv1.PolicyInfo{AppliedToGroups: int32(n[0]), AddressGroups: int32(n[1]), NetworkPolicies: int32(n[2])}
}
