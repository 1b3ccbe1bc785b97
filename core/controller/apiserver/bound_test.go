package apiserver

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// TestReadersBoundToANode: a requester whose token is bound to a node (an
// agent's pod-bound ServiceAccount token) lists and watches that node's
// span only: another node's, or everything, is refused with 403 naming its
// node; by name it gets only objects of its span. A credential bound to no
// node is left to RBAC. The AppliedToGroup of the test policy spans node-a
// only (its web pod).
func TestReadersBoundToANode(t *testing.T) {
	e := startHubs(t)
	s := newStorage(e.atg)
	agentOn := func(node string) context.Context {
		return request.WithUser(context.Background(), &user.DefaultInfo{
			Name:  "system:serviceaccount:kube-system:seine-agent",
			Extra: map[string][]string{nodeNameExtra: {node}},
		})
	}
	of := func(node string) *metainternalversion.ListOptions {
		if node == "" {
			return &metainternalversion.ListOptions{}
		}
		return &metainternalversion.ListOptions{FieldSelector: fields.OneTermEqualSelector(cp.NodeNameField, node)}
	}
	l, err := s.List(agentOn("node-a"), of("node-a"))
	if err != nil {
		t.Fatalf("node-a's agent listing node-a's span: %v", err)
	}
	items := l.(*cp.AppliedToGroupList).Items
	if len(items) != 1 {
		t.Fatalf("node-a's span: %d groups, want 1", len(items))
	}
	name := items[0].Name
	for _, tc := range []struct{ who, selects string }{{"node-a", "node-b"}, {"node-a", ""}, {"node-b", "node-a"}} {
		if _, err := s.List(agentOn(tc.who), of(tc.selects)); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.who) {
			t.Errorf("%s's agent listing %q: %v, want 403 naming %s", tc.who, tc.selects, err, tc.who)
		}
		if w, err := s.Watch(agentOn(tc.who), of(tc.selects)); !apierrors.IsForbidden(err) {
			if w != nil {
				w.Stop()
			}
			t.Errorf("%s's agent watching %q: %v, want 403", tc.who, tc.selects, err)
		}
	}
	w, err := s.Watch(agentOn("node-b"), of("node-b"))
	if err != nil {
		t.Errorf("node-b's agent watching its own (empty) span: %v", err)
	} else {
		w.Stop()
	}
	if _, err := s.Get(agentOn("node-a"), name, nil); err != nil {
		t.Errorf("node-a's agent getting a group of its span: %v", err)
	}
	if _, err := s.Get(agentOn("node-b"), name, nil); !apierrors.IsNotFound(err) {
		t.Errorf("node-b's agent getting node-a's group: %v, want 404", err)
	}
	admin := request.WithUser(context.Background(), &user.DefaultInfo{Name: "admin"})
	if l, err := s.List(admin, of("")); err != nil || len(l.(*cp.AppliedToGroupList).Items) != 1 {
		t.Errorf("a credential bound to no node listing everything: %v", err)
	}
	if _, err := s.Get(admin, name, nil); err != nil {
		t.Errorf("a credential bound to no node getting by name: %v", err)
	}
}
