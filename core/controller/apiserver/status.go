package apiserver

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/controller"
)

// realization is one policy in a node's report.
type realization struct {
	generation int64
	err        string
}

// nodeReport is the last NodePolicyStatus a node sent.
type nodeReport struct {
	policies map[string]realization
	at       time.Time // when it was received
	version  uint64
}

// reports keeps every node's last report of the policies it realized, and
// computes NetworkPolicy status from them when an admin reads policies.
// Reports never touch the hubs: a report causes no watch event.
type reports struct {
	mu      sync.RWMutex
	nodes   map[string]*nodeReport
	version uint64
	// nodeExists, when set, tells whether a node exists; a report is
	// refused with its error (see Server.TrackNodes).
	nodeExists func(name string) error
	// onReport, when set, is told of every report stored: the policies
	// it shows realized at a generation the node's last report did not.
	// It runs after the lock is released.
	onReport func(node string, newly map[string]int64, at time.Time)
}

func newReports() *reports {
	return &reports{nodes: map[string]*nodeReport{}, version: uint64(time.Now().UnixMicro())}
}

// validateReport refuses a report without a name, or that lists a policy
// twice or without a name.
func validateReport(r *cp.NodePolicyStatus) error {
	if r.Name == "" {
		return apierrors.NewBadRequest("nodepolicystatus: metadata.name (the node's name) is required")
	}
	seen := make(map[string]struct{}, len(r.Policies))
	for i, p := range r.Policies {
		if p.Name == "" {
			return apierrors.NewBadRequest(fmt.Sprintf("nodepolicystatus %s: policies[%d] has no name", r.Name, i))
		}
		if _, dup := seen[p.Name]; dup {
			return apierrors.NewBadRequest(fmt.Sprintf("nodepolicystatus %s: policy %s is listed more than once", r.Name, p.Name))
		}
		seen[p.Name] = struct{}{}
	}
	return nil
}

// set replaces node's report and returns it as stored; with dryRun it only
// returns what it would store. A report for a node that does not exist is
// refused. The check is made under the lock that forget takes after the
// node left the lister, so a report racing the node's deletion is either
// refused or forgotten.
func (r *reports) set(in *cp.NodePolicyStatus, now time.Time, dryRun bool) (*cp.NodePolicyStatus, error) {
	rep := &nodeReport{policies: make(map[string]realization, len(in.Policies)), at: now}
	for _, p := range in.Policies {
		rep.policies[p.Name] = realization{generation: p.Generation, err: p.Error}
	}
	var newly map[string]int64
	var onReport func(string, map[string]int64, time.Time)
	// After the lock is released: onReport looks at the hub.
	defer func() {
		if onReport != nil {
			onReport(in.Name, newly, now)
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodeExists != nil {
		if err := r.nodeExists(in.Name); err != nil {
			return nil, err
		}
	}
	if dryRun {
		return rep.object(in.Name), nil
	}
	r.version++
	rep.version = r.version
	prev := r.nodes[in.Name]
	r.nodes[in.Name] = rep
	if onReport = r.onReport; onReport != nil {
		newly = map[string]int64{}
		for name, p := range rep.policies {
			if p.err != "" {
				continue
			}
			if prev != nil {
				if old, ok := prev.policies[name]; ok && old.generation == p.generation && old.err == "" {
					continue
				}
			}
			newly[name] = p.generation
		}
	}
	return rep.object(in.Name), nil
}

// forget drops the report of a node that left the cluster.
func (r *reports) forget(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.nodes[node]; ok {
		delete(r.nodes, node)
		r.version++
	}
}

// object renders a report as the API object, policies sorted by name.
func (rep *nodeReport) object(node string) *cp.NodePolicyStatus {
	o := &cp.NodePolicyStatus{TypeMeta: typeMeta("NodePolicyStatus")}
	o.Name = node
	// A report replaces the node's previous one: its creation time is the
	// time of the last report.
	o.CreationTimestamp = metav1.NewTime(rep.at)
	o.ResourceVersion = strconv.FormatUint(rep.version, 10)
	o.Policies = make([]cp.PolicyRealization, 0, len(rep.policies))
	for name, p := range rep.policies {
		o.Policies = append(o.Policies, cp.PolicyRealization{Name: name, Generation: p.generation, Error: p.err})
	}
	slices.SortFunc(o.Policies, func(a, b cp.PolicyRealization) int { return cmp.Compare(a.Name, b.Name) })
	return o
}

// tally counts what the nodes of one policy's span reported.
type tally struct {
	realized int32
	failed   []string
}

// fill sets the Status of policies (stamped copies, span by span) from the
// reports. One policy costs a lookup per reporting node; a list walks
// every report entry once instead.
func (r *reports) fill(policies []*cp.NetworkPolicy, spans []*controller.Span) {
	tallies := make([]tally, len(policies))
	r.mu.RLock()
	if len(policies) == 1 {
		np, span := policies[0], spans[0]
		for node, rep := range r.nodes {
			if p, ok := rep.policies[np.Name]; ok && p.generation == np.Generation && span.Has(node) {
				tallies[0].add(node, p)
			}
		}
	} else {
		index := make(map[string]int, len(policies))
		for i, np := range policies {
			index[np.Name] = i
		}
		for node, rep := range r.nodes {
			for name, p := range rep.policies {
				i, ok := index[name]
				if ok && p.generation == policies[i].Generation && spans[i].Has(node) {
					tallies[i].add(node, p)
				}
			}
		}
	}
	r.mu.RUnlock()
	for i, np := range policies {
		np.Status = tallies[i].status(np.Generation, spans[i].Len())
		if np.TranslationError != "" {
			// The controller itself could not translate part of the
			// policy: whatever the nodes report, it is not what was asked.
			np.Status.Phase = cp.PolicyFailed
			np.Status.Error = "seine-controller could not translate part of the policy, which is denied: " + np.TranslationError
		}
	}
}

func (t *tally) add(node string, p realization) {
	if p.err != "" {
		t.failed = append(t.failed, node)
	} else {
		t.realized++
	}
}

func (t *tally) status(generation int64, desired int) *cp.NetworkPolicyStatus {
	st := &cp.NetworkPolicyStatus{Generation: generation, DesiredNodes: int32(desired), RealizedNodes: t.realized, Phase: cp.PolicyRealizing}
	switch {
	case len(t.failed) > 0:
		slices.Sort(t.failed)
		st.FailedNodes, st.Phase = t.failed, cp.PolicyFailed
	case int(t.realized) >= desired:
		st.Phase = cp.PolicyRealized
	}
	return st
}

func (r *reports) get(node string) (*cp.NodePolicyStatus, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rep, ok := r.nodes[node]
	if !ok {
		return nil, apierrors.NewNotFound(cp.Resource(nodePolicyStatuses), node)
	}
	return rep.object(node), nil
}

func (r *reports) list() *cp.NodePolicyStatusList {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l := &cp.NodePolicyStatusList{Items: make([]cp.NodePolicyStatus, 0, len(r.nodes))}
	for node, rep := range r.nodes {
		l.Items = append(l.Items, *rep.object(node))
	}
	slices.SortFunc(l.Items, func(a, b cp.NodePolicyStatus) int { return cmp.Compare(a.Name, b.Name) })
	l.ResourceVersion = strconv.FormatUint(r.version, 10)
	return l
}

const nodePolicyStatuses = "nodepolicystatuses"

// nodeNameExtra is the user extra of a ServiceAccount token bound to a pod
// (Kubernetes 1.30 and later): the name of the pod's node. An agent in
// seine.yml's DaemonSet authenticates with such a token.
const nodeNameExtra = "authentication.kubernetes.io/node-name"

// checkReporter refuses a report for another node than the one the
// requester's credential is bound to. Agents share one ServiceAccount, so
// RBAC cannot tell their nodes apart; their tokens can. A credential bound
// to no node (a static token, a client certificate, an admin) is left to
// RBAC alone.
func checkReporter(ctx context.Context, node string) error {
	u, ok := request.UserFrom(ctx)
	if !ok {
		return nil
	}
	bound := u.GetExtra()[nodeNameExtra]
	if len(bound) == 0 || slices.Equal(bound, []string{node}) {
		return nil
	}
	return apierrors.NewForbidden(cp.Resource(nodePolicyStatuses), node,
		fmt.Errorf("%s may report only for node %s, the node its credential is bound to", u.GetName(), strings.Join(bound, ",")))
}

// statusStorage is the REST storage of nodepolicystatuses: create (an
// agent's report, replacing the node's previous one), get and list.
type statusStorage struct {
	r *reports
	rest.TableConvertor
}

func newStatusStorage(r *reports) *statusStorage {
	return &statusStorage{r: r, TableConvertor: nodePolicyStatusTable{}}
}

var (
	_ rest.Storage              = (*statusStorage)(nil)
	_ rest.Scoper               = (*statusStorage)(nil)
	_ rest.Creater              = (*statusStorage)(nil)
	_ rest.Getter               = (*statusStorage)(nil)
	_ rest.Lister               = (*statusStorage)(nil)
	_ rest.SingularNameProvider = (*statusStorage)(nil)
)

func (s *statusStorage) New() runtime.Object     { return &cp.NodePolicyStatus{} }
func (s *statusStorage) NewList() runtime.Object { return &cp.NodePolicyStatusList{} }
func (s *statusStorage) Destroy()                {}
func (s *statusStorage) NamespaceScoped() bool   { return false }
func (s *statusStorage) GetSingularName() string { return "nodepolicystatus" }

// Create stores a node's report, replacing the one it sent before: it is a
// report, not the creation of an object that must not exist yet, so a
// node reports with create every time.
func (s *statusStorage) Create(ctx context.Context, obj runtime.Object, validate rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	in, ok := obj.(*cp.NodePolicyStatus)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a NodePolicyStatus: %T", obj))
	}
	if err := admitReport(ctx, obj, in.Name, validateReport(in), validate); err != nil {
		return nil, err
	}
	return s.r.set(in, time.Now(), opts != nil && len(opts.DryRun) > 0)
}

// admitReport admits a node's report (a nodepolicystatuses or
// nodepolicystatsreports create): invalid is what the report's own
// validation found, then the reporter must be bound to node (or to none),
// then the request's validation runs.
func admitReport(ctx context.Context, obj runtime.Object, node string, invalid error, validate rest.ValidateObjectFunc) error {
	if invalid != nil {
		return invalid
	}
	if err := checkReporter(ctx, node); err != nil {
		return err
	}
	if validate != nil {
		return validate(ctx, obj)
	}
	return nil
}

func (s *statusStorage) Get(_ context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	return s.r.get(name)
}

func (s *statusStorage) List(_ context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	if opts != nil && ((opts.LabelSelector != nil && !opts.LabelSelector.Empty()) || (opts.FieldSelector != nil && !opts.FieldSelector.Empty())) {
		return nil, apierrors.NewBadRequest("nodepolicystatuses: selectors are not supported")
	}
	return s.r.list(), nil
}
