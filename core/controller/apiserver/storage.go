package apiserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// storage is the read-only REST storage of one resource, backed by a hub:
// get, list and watch, cluster-scoped, filtered by fieldSelector=nodeName.
type storage[T metav1.Object] struct {
	h *hub[T]
	rest.TableConvertor
}

func newStorage[T metav1.Object](h *hub[T]) *storage[T] {
	return &storage[T]{h: h, TableConvertor: rest.NewDefaultTableConvertor(cp.Resource(h.k.resource))}
}

var (
	_ rest.Storage              = (*storage[*cp.NetworkPolicy])(nil)
	_ rest.Scoper               = (*storage[*cp.NetworkPolicy])(nil)
	_ rest.Getter               = (*storage[*cp.NetworkPolicy])(nil)
	_ rest.Lister               = (*storage[*cp.NetworkPolicy])(nil)
	_ rest.Watcher              = (*storage[*cp.NetworkPolicy])(nil)
	_ rest.SingularNameProvider = (*storage[*cp.NetworkPolicy])(nil)
)

func (s *storage[T]) New() runtime.Object     { return s.h.k.newObj() }
func (s *storage[T]) NewList() runtime.Object { return s.h.k.newList() }
func (s *storage[T]) Destroy()                {}
func (s *storage[T]) NamespaceScoped() bool   { return false }
func (s *storage[T]) GetSingularName() string { return s.h.k.singular }
func (s *storage[T]) waitReady(ctx context.Context) error {
	select {
	case <-s.h.ready:
		return nil
	case <-ctx.Done():
		return apierrors.NewServiceUnavailable(fmt.Sprintf("%s are not computed yet", s.h.k.resource))
	}
}

func (s *storage[T]) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	if bound := boundNodes(ctx); len(bound) > 0 {
		// A node's agent sees only its span: an object outside it does
		// not exist for the agent, as in its list.
		return s.h.getIn(name, bound)
	}
	return s.h.get(name)
}

func (s *storage[T]) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	v, err := viewSelected(opts)
	if err != nil {
		return nil, err
	}
	if err := checkReader(ctx, s.h.k.resource, v.node); err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	return s.h.list(v), nil
}

func (s *storage[T]) Watch(ctx context.Context, opts *metainternalversion.ListOptions) (watch.Interface, error) {
	v, err := viewSelected(opts)
	if err != nil {
		return nil, err
	}
	if err := checkReader(ctx, s.h.k.resource, v.node); err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	initial := opts == nil || opts.ResourceVersion == "" || opts.ResourceVersion == "0"
	bookmark := false
	var rv uint64
	if opts != nil && opts.SendInitialEvents != nil {
		initial = *opts.SendInitialEvents
		bookmark = initial && opts.AllowWatchBookmarks
	}
	if !initial {
		if rv, err = strconv.ParseUint(opts.ResourceVersion, 10, 64); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q: %v", opts.ResourceVersion, err))
		}
	}
	return s.h.watchFrom(v, initial, rv, bookmark)
}

// view is what one list or watch sees: the objects whose span holds node
// (every object for node ""), and, for a node, tiered policies only if its
// agent asked for them with tiered=true. An agent older than tiered policy
// does not ask, and would read their Drop rules as allows; a list without a
// node (an admin's, the controller's own) sees everything.
type view struct {
	node   string
	tiered bool
}

// viewSelected returns the view of fieldSelector nodeName=<node> and
// tiered=true|false (both optional), and refuses any other selector.
func viewSelected(opts *metainternalversion.ListOptions) (view, error) {
	if opts == nil {
		return view{}, nil
	}
	if opts.LabelSelector != nil && !opts.LabelSelector.Empty() {
		return view{}, apierrors.NewBadRequest("label selectors are not supported")
	}
	if opts.FieldSelector == nil || opts.FieldSelector.Empty() {
		return view{}, nil
	}
	return viewFromFields(opts.FieldSelector)
}

func viewFromFields(sel fields.Selector) (view, error) {
	var v view
	seen := map[string]bool{}
	for _, r := range sel.Requirements() {
		if seen[r.Field] || (r.Operator != selection.Equals && r.Operator != selection.DoubleEquals) {
			return view{}, badSelector(sel)
		}
		seen[r.Field] = true
		switch r.Field {
		case cp.NodeNameField:
			if r.Value == "" {
				return view{}, badSelector(sel)
			}
			v.node = r.Value
		case cp.TieredField:
			t, err := strconv.ParseBool(r.Value)
			if err != nil {
				return view{}, badSelector(sel)
			}
			v.tiered = t
		default:
			return view{}, badSelector(sel)
		}
	}
	return v, nil
}

func badSelector(sel fields.Selector) error {
	return apierrors.NewBadRequest(fmt.Sprintf("field selector %q: only %s=<node> and %s=true|false are supported", sel, cp.NodeNameField, cp.TieredField))
}

// boundNodes returns the nodes the requester's credential is bound to (a
// pod's ServiceAccount token: nodeNameExtra), none for any other.
func boundNodes(ctx context.Context) []string {
	u, ok := request.UserFrom(ctx)
	if !ok {
		return nil
	}
	return u.GetExtra()[nodeNameExtra]
}

// checkReader refuses a list or watch by a credential bound to a node
// unless it selects that node (fieldSelector=nodeName=<its node>): an
// agent's token lets it see its own node's span only, never another
// node's or everything. Agents share one ServiceAccount, so RBAC cannot
// tell them apart; their pod-bound tokens can. Credentials bound to no
// node (admins, the controller's viewers, static tokens) are left to RBAC.
func checkReader(ctx context.Context, resource, node string) error {
	bound := boundNodes(ctx)
	if len(bound) == 0 || (len(bound) == 1 && bound[0] == node) {
		return nil
	}
	u, _ := request.UserFrom(ctx)
	return apierrors.NewForbidden(cp.Resource(resource), "",
		fmt.Errorf("%s may list and watch only with fieldSelector %s=%s, the node its credential is bound to", u.GetName(), cp.NodeNameField, strings.Join(bound, ",")))
}
