// Package apiserver serves the objects core/controller computes as the API
// controlplane.seine.io/v1beta1 (networkpolicies, appliedtogroups,
// addressgroups: cluster-scoped get, list and watch) with k8s.io/apiserver.
// Agents list and watch with fieldSelector=nodeName=<node> and see only
// their span; group membership changes reach them as patches. Agents report
// the policies they realized by creating nodepolicystatuses; an admin's get
// or list of networkpolicies carries the realization status computed from
// those reports. Authentication and authorization are delegated to the
// kube-apiserver. See README.md and core/controller/README.md.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/healthz"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/util/compatibility"

	"github.com/seine-cni/seine/core/admission"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/controller"
	"github.com/seine-cni/seine/core/metrics"
)

// DefaultPort is the controller's default secure port.
const DefaultPort = 10349

// Options configure serving, and the kube-apiserver that authentication and
// authorization are delegated to.
type Options struct {
	SecureServing  *genericoptions.SecureServingOptionsWithLoopback
	Authentication *genericoptions.DelegatingAuthenticationOptions
	Authorization  *genericoptions.DelegatingAuthorizationOptions
	// Service ("namespace/name") is the Service in front of the
	// controller: a self-signed serving certificate is valid for its name
	// <name>.<namespace>.svc, which the aggregator verifies.
	Service string
	// APIServices are the APIServices the controller serves
	// (v1beta1.controlplane.seine.io, v1alpha1.stats.seine.io); with a
	// self-signed certificate main keeps their caBundles (PublishCABundle).
	APIServices []string
	// ValidatingWebhook is the ValidatingWebhookConfiguration whose
	// webhooks call the controller; with a self-signed certificate main
	// keeps their caBundle (PublishWebhookCABundle).
	ValidatingWebhook string
}

// NewOptions returns the defaults: port DefaultPort on every address, a
// self-signed serving certificate kept in memory unless --tls-cert-file is
// given, delegation through the in-cluster configuration.
func NewOptions() *Options {
	ss := genericoptions.NewSecureServingOptions()
	ss.BindPort = DefaultPort
	ss.ServerCert.CertDirectory = ""
	ss.ServerCert.PairName = "seine-controller"
	return &Options{
		SecureServing:  ss.WithLoopback(),
		Authentication: genericoptions.NewDelegatingAuthenticationOptions(),
		Authorization:  genericoptions.NewDelegatingAuthorizationOptions(),
	}
}

// AddFlags adds the serving and delegation flags (--bind-address,
// --secure-port, --tls-cert-file, --authentication-kubeconfig, ...).
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.SecureServing.AddFlags(fs)
	o.Authentication.AddFlags(fs)
	o.Authorization.AddFlags(fs)
	fs.StringVar(&o.Service, "service", o.Service,
		"namespace/name of the Service in front of the controller: a self-signed serving certificate is valid for <name>.<namespace>.svc")
	fs.StringSliceVar(&o.APIServices, "apiservice", o.APIServices,
		"an APIService this controller serves (repeat it, or separate names with commas): with a self-signed serving certificate, its caBundle is kept set to the certificate's CA")
	fs.StringVar(&o.ValidatingWebhook, "validating-webhook-configuration", o.ValidatingWebhook,
		"the ValidatingWebhookConfiguration whose webhooks call this controller (crd.seine.io's admission): with a self-signed serving certificate, their caBundle is kept set to the certificate's CA")
}

// serviceDNSNames are the names the aggregator may verify the serving
// certificate against.
func (o *Options) serviceDNSNames() ([]string, error) {
	if o.Service == "" {
		return nil, nil
	}
	ns, name, ok := strings.Cut(o.Service, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("--service %q: want namespace/name", o.Service)
	}
	return []string{name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}, nil
}

// SetKubeconfig makes authentication and authorization use kubeconfig to
// reach the kube-apiserver (empty: the in-cluster configuration).
func (o *Options) SetKubeconfig(kubeconfig string) {
	o.Authentication.RemoteKubeConfigFile = kubeconfig
	o.Authorization.RemoteKubeConfigFile = kubeconfig
}

// Stores are what the server serves. Ready reports that they hold a
// complete computation (the controller has published once after its
// informers synced); nothing is served before, so that no agent ever sees
// an empty policy set that is merely not computed yet.
type Stores struct {
	NetworkPolicies *controller.Store[*cp.NetworkPolicy]
	AppliedToGroups *controller.Store[*cp.AppliedToGroup]
	AddressGroups   *controller.Store[*cp.AddressGroup]
	Ready           func() bool
	// Admission, when set, is served at admission.Path (POST, no
	// authentication or authorization: the kube-apiserver calls webhooks
	// without credentials, and the answer tells only whether an object it
	// sends is valid).
	Admission http.Handler
	// SupportBundle, when set, is served at bundle.Path (GET) to clients
	// the kube-apiserver authorizes for get on that non-resource URL
	// (ClusterRole seine-supportbundle): the controller's part of a
	// cluster support bundle.
	SupportBundle http.Handler
}

// FromController returns the stores of c.
func FromController(c *controller.Controller) Stores {
	return Stores{NetworkPolicies: c.NetworkPolicies, AppliedToGroups: c.AppliedToGroups, AddressGroups: c.AddressGroups, Ready: c.Idle}
}

// Server is the controlplane API server.
type Server struct {
	generic *genericapiserver.GenericAPIServer
	log     *slog.Logger
	ready   func() bool
	np      *hub[*cp.NetworkPolicy]
	atg     *hub[*cp.AppliedToGroup]
	ag      *hub[*cp.AddressGroup]
	reports *reports
	stats   *statsReports
	serving atomic.Bool
	// selfSignedCA signed the serving certificate when New generated it.
	selfSignedCA []byte
}

// New builds the server; Run serves.
func New(o *Options, st Stores, log *slog.Logger) (*Server, error) {
	dnsNames, err := o.serviceDNSNames()
	if err != nil {
		return nil, err
	}
	if err := o.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", dnsNames, nil); err != nil {
		return nil, fmt.Errorf("self-signed serving certificate: %w", err)
	}
	var selfSignedCA []byte
	if gen := o.SecureServing.ServerCert.GeneratedCert; gen != nil {
		chain, _ := gen.CurrentCertKeyContent()
		if selfSignedCA, err = caFromChain(chain); err != nil {
			return nil, err
		}
	}
	if st.Admission != nil && !slices.Contains(o.Authorization.AlwaysAllowPaths, admission.Path) {
		o.Authorization.WithAlwaysAllowPaths(admission.Path)
	}
	var errs []error
	errs = append(errs, o.SecureServing.Validate()...)
	errs = append(errs, o.Authentication.Validate()...)
	errs = append(errs, o.Authorization.Validate()...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("options: %w", err)
	}
	cfg := genericapiserver.NewConfig(Codecs)
	if err := o.SecureServing.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		return nil, fmt.Errorf("serving: %w", err)
	}
	if err := o.Authentication.ApplyTo(&cfg.Authentication, cfg.SecureServing, nil); err != nil {
		return nil, fmt.Errorf("delegated authentication: %w", err)
	}
	if err := o.Authorization.ApplyTo(&cfg.Authorization); err != nil {
		return nil, fmt.Errorf("delegated authorization: %w", err)
	}
	if cfg.Authorization.Authorizer != nil {
		cfg.Authorization.Authorizer = withoutSelectors{cfg.Authorization.Authorizer}
	}
	cfg.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openAPIDefinitions, openapinamer.NewDefinitionNamer(Scheme))
	cfg.SkipOpenAPIInstallation = true
	generic, err := cfg.Complete(nil).New("seine-controller", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("apiserver: %w", err)
	}
	s := &Server{
		generic: generic, log: log, ready: st.Ready, selfSignedCA: selfSignedCA,
		np:      newHub(networkPolicyKind, st.NetworkPolicies, log),
		atg:     newHub(appliedToGroupKind, st.AppliedToGroups, log),
		ag:      newHub(addressGroupKind, st.AddressGroups, log),
		reports: newReports(),
		stats:   newStatsReports(),
	}
	s.np.status = s.reports.fill
	npStorage := newStorage(s.np)
	npStorage.TableConvertor = networkPolicyTable{}
	info := genericapiserver.NewDefaultAPIGroupInfo(cp.GroupName, Scheme, runtime.NewParameterCodec(Scheme), Codecs)
	info.VersionedResourcesStorageMap[cp.Version] = map[string]rest.Storage{
		networkPolicyKind.resource:  npStorage,
		appliedToGroupKind.resource: newStorage(s.atg),
		addressGroupKind.resource:   newStorage(s.ag),
		nodePolicyStatuses:          newStatusStorage(s.reports),
		nodePolicyStatsReports:      &statsReportStorage{s: s.stats, TableConvertor: rest.NewDefaultTableConvertor(cp.Resource(nodePolicyStatsReports))},
	}
	if err := generic.InstallAPIGroup(&info); err != nil {
		return nil, fmt.Errorf("install %s: %w", cp.GroupName, err)
	}
	stats := genericapiserver.NewDefaultAPIGroupInfo(statsv1.GroupName, Scheme, runtime.NewParameterCodec(Scheme), Codecs)
	stats.VersionedResourcesStorageMap[statsv1.Version] = map[string]rest.Storage{}
	for _, k := range statsKinds {
		stats.VersionedResourcesStorageMap[statsv1.Version][k.resource] = &statsStorage{k: k, s: s.stats, np: s.np, TableConvertor: statsTable{}}
	}
	if err := generic.InstallAPIGroup(&stats); err != nil {
		return nil, fmt.Errorf("install %s: %w", statsv1.GroupName, err)
	}
	if st.Admission != nil {
		generic.Handler.NonGoRestfulMux.Handle(admission.Path, st.Admission)
	}
	if st.SupportBundle != nil {
		generic.Handler.NonGoRestfulMux.Handle(bundle.Path, st.SupportBundle)
	}
	err = generic.AddReadyzChecks(healthz.NamedCheck("policies-computed", func(*http.Request) error {
		if !s.serving.Load() {
			return errors.New("network policies are not computed yet")
		}
		return nil
	}))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Run serves until ctx ends. The API answers once the stores are Ready.
func (s *Server) Run(ctx context.Context) error {
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for !s.ready() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		go s.np.run(ctx)
		go s.atg.run(ctx)
		go s.ag.run(ctx)
		for _, h := range []<-chan struct{}{s.np.ready, s.atg.ready, s.ag.ready} {
			select {
			case <-h:
			case <-ctx.Done():
				return
			}
		}
		s.serving.Store(true)
		s.log.Info("serving network policies", "networkPolicies", s.np.store.Len(), "appliedToGroups", s.atg.store.Len(), "addressGroups", s.ag.store.Len())
	}()
	if err := s.generic.PrepareRun().RunWithContext(ctx); err != nil {
		return fmt.Errorf("controlplane api server: %w", err)
	}
	return nil
}

// TrackNodes makes the server keep reports only of nodes that exist:
// exists returns nil for a node that does, and the error to refuse a
// report with otherwise (NodeNotFound, or NodesNotSynced while it cannot
// tell yet); ForgetNode drops the report of a node that left. Call it
// before Run, and call ForgetNode after the node is gone from what exists
// answers: a report racing the deletion is then either refused or dropped.
func (s *Server) TrackNodes(exists func(name string) error) {
	s.reports.mu.Lock()
	s.reports.nodeExists = exists
	s.reports.mu.Unlock()
	s.stats.mu.Lock()
	s.stats.nodeExists = exists
	s.stats.mu.Unlock()
}

// NodeNotFound is the error to refuse a report for a node that does not
// exist with.
func NodeNotFound(name string) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, name)
}

// NodesNotSynced is the error to refuse a report with while the node list
// is not synced yet; the agent retries.
func NodesNotSynced() error {
	return apierrors.NewServiceUnavailable("seine-controller has not listed the nodes yet")
}

// ForgetNode drops the realization and stats reports of a node that left
// the cluster.
func (s *Server) ForgetNode(name string) {
	s.reports.forget(name)
	s.stats.forget(name)
}

// SetMetrics makes the server record node reports and realization lags
// in m. Call it before Run.
func (s *Server) SetMetrics(m *metrics.Controller) {
	s.reports.mu.Lock()
	defer s.reports.mu.Unlock()
	s.reports.onReport = func(node string, newly map[string]int64, at time.Time) {
		m.Report()
		for name, gen := range newly {
			if since, ok := s.np.since(name, gen, node); ok {
				m.Realized(at.Sub(since))
			}
		}
	}
}

// WatcherCounts is the number of open watches per kind, in
// metrics.ObjectKinds' order.
func (s *Server) WatcherCounts() metrics.ObjectCounts {
	return metrics.ObjectCounts{s.atg.numWatchers(), s.ag.numWatchers(), s.np.numWatchers()}
}

// ConnectedAgents is the number of nodes watching networkpolicies.
func (s *Server) ConnectedAgents() int {
	set := map[string]struct{}{}
	s.np.watchingNodes(set)
	return len(set)
}

// Watchers is the number of open watches of each resource.
func (s *Server) Watchers() (networkPolicies, appliedToGroups, addressGroups int) {
	return s.np.numWatchers(), s.atg.numWatchers(), s.ag.numWatchers()
}
