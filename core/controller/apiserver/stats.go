package apiserver

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
)

// Policy stats (README.md, "Policy stats"): agents report their running
// totals per rule (controlplane.seine.io nodepolicystatsreports, a create
// replacing the node's last report, as nodepolicystatuses); users read
// each policy's totals, summed over the nodes' last reports when read, as
// stats.seine.io networkpolicystats (and the three other kinds). A restarted controller knows every total
// again at each node's next report: the nodes keep them, not the
// controller.

const nodePolicyStatsReports = "nodepolicystatsreports"

// nodeStats is one node's last report: per policy, since when it counts
// and its rules' totals by index.
type nodeStats struct {
	at       time.Time
	version  uint64
	policies map[string]policyStats
}

type policyStats struct {
	since metav1.Time
	rules map[int32]cp.TrafficStats
}

// statsReports keeps every node's last NodePolicyStatsReport.
type statsReports struct {
	mu      sync.RWMutex
	nodes   map[string]*nodeStats
	version uint64
	// nodeExists, when set, refuses reports of nodes that do not exist
	// (Server.TrackNodes).
	nodeExists func(name string) error
}

func newStatsReports() *statsReports {
	return &statsReports{nodes: map[string]*nodeStats{}, version: uint64(time.Now().UnixMicro())}
}

func validateStatsReport(r *cp.NodePolicyStatsReport) error {
	if r.Name == "" {
		return apierrors.NewBadRequest("nodepolicystatsreport: metadata.name (the node's name) is required")
	}
	seen := make(map[string]struct{}, len(r.Policies))
	for i, p := range r.Policies {
		if p.Name == "" {
			return apierrors.NewBadRequest(fmt.Sprintf("nodepolicystatsreport %s: policies[%d] has no name", r.Name, i))
		}
		if _, dup := seen[p.Name]; dup {
			return apierrors.NewBadRequest(fmt.Sprintf("nodepolicystatsreport %s: policy %s is listed more than once", r.Name, p.Name))
		}
		seen[p.Name] = struct{}{}
		for _, ru := range p.Rules {
			if t := ru.TrafficStats; ru.Index < 0 || t.Sessions < 0 || t.Packets < 0 || t.Bytes < 0 {
				return apierrors.NewBadRequest(fmt.Sprintf("nodepolicystatsreport %s: policy %s rule %d has negative values", r.Name, p.Name, ru.Index))
			}
		}
	}
	return nil
}

func (s *statsReports) set(in *cp.NodePolicyStatsReport, now time.Time, dryRun bool) (*cp.NodePolicyStatsReport, error) {
	rep := &nodeStats{at: now, policies: make(map[string]policyStats, len(in.Policies))}
	for _, p := range in.Policies {
		ps := policyStats{since: p.Since, rules: make(map[int32]cp.TrafficStats, len(p.Rules))}
		for _, r := range p.Rules {
			ps.rules[r.Index] = r.TrafficStats
		}
		rep.policies[p.Name] = ps
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodeExists != nil {
		if err := s.nodeExists(in.Name); err != nil {
			return nil, err
		}
	}
	if !dryRun {
		s.version++
		rep.version = s.version
		s.nodes[in.Name] = rep
	}
	return rep.object(in.Name), nil
}

func (s *statsReports) forget(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[node]; ok {
		delete(s.nodes, node)
		s.version++
	}
}

func (rep *nodeStats) object(node string) *cp.NodePolicyStatsReport {
	o := &cp.NodePolicyStatsReport{TypeMeta: typeMeta("NodePolicyStatsReport")}
	o.Name = node
	o.CreationTimestamp = metav1.NewTime(rep.at)
	o.ResourceVersion = strconv.FormatUint(rep.version, 10)
	for name, p := range rep.policies {
		ps := cp.PolicyTrafficStats{Name: name, Since: p.since}
		for i, t := range p.rules {
			ps.Rules = append(ps.Rules, cp.RuleTrafficStats{Index: i, TrafficStats: t})
		}
		slices.SortFunc(ps.Rules, func(a, b cp.RuleTrafficStats) int { return cmp.Compare(a.Index, b.Index) })
		o.Policies = append(o.Policies, ps)
	}
	slices.SortFunc(o.Policies, func(a, b cp.PolicyTrafficStats) int { return cmp.Compare(a.Name, b.Name) })
	return o
}

// sum adds up the nodes' totals of each policy in names, by rule index,
// and the earliest time a node began counting it.
func (s *statsReports) sum(names map[string]bool) map[string]*policyStats {
	out := map[string]*policyStats{}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, rep := range s.nodes {
		for name, p := range rep.policies {
			if !names[name] {
				continue
			}
			acc := out[name]
			if acc == nil {
				acc = &policyStats{since: p.since, rules: map[int32]cp.TrafficStats{}}
				out[name] = acc
			}
			if p.since.Before(&acc.since) {
				acc.since = p.since
			}
			for i, t := range p.rules {
				a := acc.rules[i]
				acc.rules[i] = cp.TrafficStats{Sessions: a.Sessions + t.Sessions, Packets: a.Packets + t.Packets, Bytes: a.Bytes + t.Bytes}
			}
		}
	}
	return out
}

// statsReportStorage is the REST storage of nodepolicystatsreports: create
// (an agent's report), get and list.
type statsReportStorage struct {
	s *statsReports
	rest.TableConvertor
}

var (
	_ rest.Creater              = (*statsReportStorage)(nil)
	_ rest.Getter               = (*statsReportStorage)(nil)
	_ rest.Lister               = (*statsReportStorage)(nil)
	_ rest.Scoper               = (*statsReportStorage)(nil)
	_ rest.SingularNameProvider = (*statsReportStorage)(nil)
)

func (st *statsReportStorage) New() runtime.Object     { return &cp.NodePolicyStatsReport{} }
func (st *statsReportStorage) NewList() runtime.Object { return &cp.NodePolicyStatsReportList{} }
func (st *statsReportStorage) Destroy()                {}
func (st *statsReportStorage) NamespaceScoped() bool   { return false }
func (st *statsReportStorage) GetSingularName() string { return "nodepolicystatsreport" }

func (st *statsReportStorage) Create(ctx context.Context, obj runtime.Object, validate rest.ValidateObjectFunc, opts *metav1.CreateOptions) (runtime.Object, error) {
	in, ok := obj.(*cp.NodePolicyStatsReport)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a NodePolicyStatsReport: %T", obj))
	}
	if err := admitReport(ctx, obj, in.Name, validateStatsReport(in), validate); err != nil {
		return nil, err
	}
	return st.s.set(in, time.Now(), opts != nil && len(opts.DryRun) > 0)
}

func (st *statsReportStorage) Get(_ context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	st.s.mu.RLock()
	defer st.s.mu.RUnlock()
	rep, ok := st.s.nodes[name]
	if !ok {
		return nil, apierrors.NewNotFound(cp.Resource(nodePolicyStatsReports), name)
	}
	return rep.object(name), nil
}

func (st *statsReportStorage) List(context.Context, *metainternalversion.ListOptions) (runtime.Object, error) {
	st.s.mu.RLock()
	defer st.s.mu.RUnlock()
	l := &cp.NodePolicyStatsReportList{Items: make([]cp.NodePolicyStatsReport, 0, len(st.s.nodes))}
	for node, rep := range st.s.nodes {
		l.Items = append(l.Items, *rep.object(node))
	}
	slices.SortFunc(l.Items, func(a, b cp.NodePolicyStatsReport) int { return cmp.Compare(a.Name, b.Name) })
	l.ResourceVersion = strconv.FormatUint(st.s.version, 10)
	return l, nil
}

// statsKind is one of the kinds users read: the policies of one type.
type statsKind struct {
	resource, singular string
	policyType         cp.NetworkPolicyType
	namespaced         bool
	newObj, newList    func() runtime.Object
	// object and list wrap computed stats in the kind's types.
	object func(metav1.ObjectMeta, statsv1.PolicyStats) runtime.Object
	list   func([]runtime.Object) runtime.Object
}

var statsKinds = []statsKind{{
	resource: "networkpolicystats", singular: "networkpolicystats", policyType: cp.K8sNetworkPolicy, namespaced: true,
	newObj:  func() runtime.Object { return &statsv1.NetworkPolicyStats{} },
	newList: func() runtime.Object { return &statsv1.NetworkPolicyStatsList{} },
	object: func(m metav1.ObjectMeta, s statsv1.PolicyStats) runtime.Object {
		return &statsv1.NetworkPolicyStats{TypeMeta: statsTypeMeta("NetworkPolicyStats"), ObjectMeta: m, PolicyStats: s}
	},
	list: func(objs []runtime.Object) runtime.Object {
		return &statsv1.NetworkPolicyStatsList{Items: items[statsv1.NetworkPolicyStats](objs)}
	},
}, {
	resource: "seinenetworkpolicystats", singular: "seinenetworkpolicystats", policyType: cp.SeineNetworkPolicy, namespaced: true,
	newObj:  func() runtime.Object { return &statsv1.SeineNetworkPolicyStats{} },
	newList: func() runtime.Object { return &statsv1.SeineNetworkPolicyStatsList{} },
	object: func(m metav1.ObjectMeta, s statsv1.PolicyStats) runtime.Object {
		return &statsv1.SeineNetworkPolicyStats{TypeMeta: statsTypeMeta("SeineNetworkPolicyStats"), ObjectMeta: m, PolicyStats: s}
	},
	list: func(objs []runtime.Object) runtime.Object {
		return &statsv1.SeineNetworkPolicyStatsList{Items: items[statsv1.SeineNetworkPolicyStats](objs)}
	},
}, {
	resource: "seineclusternetworkpolicystats", singular: "seineclusternetworkpolicystats", policyType: cp.SeineClusterNetworkPolicy,
	newObj:  func() runtime.Object { return &statsv1.SeineClusterNetworkPolicyStats{} },
	newList: func() runtime.Object { return &statsv1.SeineClusterNetworkPolicyStatsList{} },
	object: func(m metav1.ObjectMeta, s statsv1.PolicyStats) runtime.Object {
		return &statsv1.SeineClusterNetworkPolicyStats{TypeMeta: statsTypeMeta("SeineClusterNetworkPolicyStats"), ObjectMeta: m, PolicyStats: s}
	},
	list: func(objs []runtime.Object) runtime.Object {
		return &statsv1.SeineClusterNetworkPolicyStatsList{Items: items[statsv1.SeineClusterNetworkPolicyStats](objs)}
	},
}, {
	resource: "clusternetworkpolicystats", singular: "clusternetworkpolicystats", policyType: cp.UpstreamClusterNetworkPolicy,
	newObj:  func() runtime.Object { return &statsv1.ClusterNetworkPolicyStats{} },
	newList: func() runtime.Object { return &statsv1.ClusterNetworkPolicyStatsList{} },
	object: func(m metav1.ObjectMeta, s statsv1.PolicyStats) runtime.Object {
		return &statsv1.ClusterNetworkPolicyStats{TypeMeta: statsTypeMeta("ClusterNetworkPolicyStats"), ObjectMeta: m, PolicyStats: s}
	},
	list: func(objs []runtime.Object) runtime.Object {
		return &statsv1.ClusterNetworkPolicyStatsList{Items: items[statsv1.ClusterNetworkPolicyStats](objs)}
	},
}}

func statsTypeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: statsv1.SchemeGroupVersion.String(), Kind: kind}
}

// items are objs, each a *T, as values.
func items[T any](objs []runtime.Object) []T {
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		out = append(out, *any(o).(*T))
	}
	return out
}

// statsStorage serves one stats kind: get and list, computed from the
// policies the controller holds and the nodes' last reports.
type statsStorage struct {
	k  statsKind
	s  *statsReports
	np *hub[*cp.NetworkPolicy]
	rest.TableConvertor
}

var (
	_ rest.Getter               = (*statsStorage)(nil)
	_ rest.Lister               = (*statsStorage)(nil)
	_ rest.Scoper               = (*statsStorage)(nil)
	_ rest.SingularNameProvider = (*statsStorage)(nil)
)

func (st *statsStorage) New() runtime.Object     { return st.k.newObj() }
func (st *statsStorage) NewList() runtime.Object { return st.k.newList() }
func (st *statsStorage) Destroy()                {}
func (st *statsStorage) NamespaceScoped() bool   { return st.k.namespaced }
func (st *statsStorage) GetSingularName() string { return st.k.singular }

// policies are the controller's policies of the kind's type in namespace
// ns ("": all), optionally only the one named name.
func (st *statsStorage) policies(ns, name string) []*cp.NetworkPolicy {
	var out []*cp.NetworkPolicy
	for _, it := range st.np.store.List("") {
		ref := it.Object.SourceRef
		if ref == nil || ref.Type != st.k.policyType || (ns != "" && ref.Namespace != ns) || (name != "" && ref.Name != name) {
			continue
		}
		out = append(out, it.Object)
	}
	slices.SortFunc(out, func(a, b *cp.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.SourceRef.Namespace, b.SourceRef.Namespace), cmp.Compare(a.SourceRef.Name, b.SourceRef.Name))
	})
	return out
}

// objects computes the stats of nps.
func (st *statsStorage) objects(nps []*cp.NetworkPolicy) []runtime.Object {
	names := make(map[string]bool, len(nps))
	for _, np := range nps {
		names[np.Name] = true
	}
	sums := st.s.sum(names)
	out := make([]runtime.Object, 0, len(nps))
	for _, np := range nps {
		m := metav1.ObjectMeta{Name: np.SourceRef.Name, Namespace: np.SourceRef.Namespace, UID: types.UID(np.SourceRef.UID)}
		var ps statsv1.PolicyStats
		sum := sums[np.Name]
		if sum != nil {
			m.CreationTimestamp = sum.since
		}
		n := map[cp.Direction]int{}
		for i, r := range np.Rules {
			rs := statsv1.RuleStats{Name: r.Name, Direction: "Ingress", Action: string(cp.RuleActionAllow)}
			if r.Direction == cp.DirectionOut {
				rs.Direction = "Egress"
			}
			if r.Name == "" {
				rs.Name = fmt.Sprintf("%s-%d", map[string]string{"Ingress": "ingress", "Egress": "egress"}[rs.Direction], n[r.Direction])
			}
			n[r.Direction]++
			if r.Action != nil {
				rs.Action = string(*r.Action)
			}
			if sum != nil {
				t := sum.rules[int32(i)]
				rs.TrafficStats = statsv1.TrafficStats{Sessions: t.Sessions, Packets: t.Packets, Bytes: t.Bytes}
			}
			ps.TrafficStats.Sessions += rs.TrafficStats.Sessions
			ps.TrafficStats.Packets += rs.TrafficStats.Packets
			ps.TrafficStats.Bytes += rs.TrafficStats.Bytes
			ps.RuleTrafficStats = append(ps.RuleTrafficStats, rs)
		}
		out = append(out, st.k.object(m, ps))
	}
	return out
}

func (st *statsStorage) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	ns := request.NamespaceValue(ctx)
	nps := st.policies(ns, name)
	if len(nps) == 0 {
		return nil, apierrors.NewNotFound(statsv1.Resource(st.k.resource), name)
	}
	return st.objects(nps[:1])[0], nil
}

func (st *statsStorage) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	if opts != nil && ((opts.LabelSelector != nil && !opts.LabelSelector.Empty()) || (opts.FieldSelector != nil && !opts.FieldSelector.Empty())) {
		return nil, apierrors.NewBadRequest(st.k.resource + ": selectors are not supported")
	}
	return st.k.list(st.objects(st.policies(request.NamespaceValue(ctx), ""))), nil
}

// statsTable is what kubectl shows of every stats kind.
type statsTable struct{}

var statsColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "The policy."},
	{Name: "Sessions", Type: "integer", Description: "Connections its rules decided, summed over the nodes."},
	{Name: "Packets", Type: "integer", Description: "Their packets, both directions."},
	{Name: "Bytes", Type: "integer", Description: "Their bytes, both directions."},
	{Name: "Age", Type: "string", Description: "Since the first node began counting the policy."},
}

func (statsTable) ConvertToTable(_ context.Context, obj runtime.Object, opts runtime.Object) (*metav1.Table, error) {
	return convertToTable(obj, opts, statsColumns, func(o runtime.Object) []any {
		var m *metav1.ObjectMeta
		var ps *statsv1.PolicyStats
		switch o := o.(type) {
		case *statsv1.NetworkPolicyStats:
			m, ps = &o.ObjectMeta, &o.PolicyStats
		case *statsv1.SeineNetworkPolicyStats:
			m, ps = &o.ObjectMeta, &o.PolicyStats
		case *statsv1.SeineClusterNetworkPolicyStats:
			m, ps = &o.ObjectMeta, &o.PolicyStats
		case *statsv1.ClusterNetworkPolicyStats:
			m, ps = &o.ObjectMeta, &o.PolicyStats
		default:
			return nil
		}
		age := "<none>"
		if !m.CreationTimestamp.IsZero() {
			age = duration.HumanDuration(time.Since(m.CreationTimestamp.Time))
		}
		return []any{m.Name, ps.TrafficStats.Sessions, ps.TrafficStats.Packets, ps.TrafficStats.Bytes, age}
	})
}
