package apiserver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"
)

func report(node string, policies ...cp.PolicyRealization) *cp.NodePolicyStatus {
	r := &cp.NodePolicyStatus{Policies: policies}
	r.Name = node
	return r
}

func renderStatus(st *cp.NetworkPolicyStatus) string {
	if st == nil {
		return "<none>"
	}
	s := fmt.Sprintf("gen %d %d/%d %s", st.Generation, st.RealizedNodes, st.DesiredNodes, st.Phase)
	if len(st.FailedNodes) > 0 {
		s += " failed " + strings.Join(st.FailedNodes, ",")
	}
	return s
}

// TestStatusFromReports: the status an admin reads is computed from the
// nodes' last reports against the policy's current generation and span;
// reports never change what agents list or watch.
func TestStatusFromReports(t *testing.T) {
	e := startHubs(t)
	r := newReports()
	e.np.status = r.fill
	ctx := context.Background()
	const name = "uid-allow-client"

	// The internal policy carries the Kubernetes policy's generation.
	np, err := e.client.NetworkingV1().NetworkPolicies("default").Get(ctx, "allow-client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np.Generation = 2
	if _, err := e.client.NetworkingV1().NetworkPolicies("default").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() string {
		t.Helper()
		o, err := e.np.get(name)
		if err != nil {
			t.Fatal(err)
		}
		return renderStatus(o.(*cp.NetworkPolicy).Status)
	}
	poll(t, "generation 2", func() bool { return strings.HasPrefix(get(), "gen 2 ") })
	if got, want := get(), "gen 2 0/1 Realizing"; got != want {
		t.Fatalf("before any report: %s, want %s", got, want)
	}
	// A second target on node-b widens the span.
	if _, err := e.client.CoreV1().Pods("default").Create(ctx, testPod("web-2", "node-b", "10.0.1.2", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "span of two nodes", func() bool { return get() == "gen 2 0/2 Realizing" })

	e.np.mu.RLock()
	version := e.np.version
	e.np.mu.RUnlock()
	steps := []struct {
		what   string
		report *cp.NodePolicyStatus
		want   string
	}{
		{"node-a realized it", report("node-a", cp.PolicyRealization{Name: name, Generation: 2}), "gen 2 1/2 Realizing"},
		{"node-c is not in the span", report("node-c", cp.PolicyRealization{Name: name, Generation: 2}), "gen 2 1/2 Realizing"},
		{"node-b has an older generation", report("node-b", cp.PolicyRealization{Name: name, Generation: 1}), "gen 2 1/2 Realizing"},
		{"node-b caught up", report("node-b", cp.PolicyRealization{Name: "other", Generation: 7}, cp.PolicyRealization{Name: name, Generation: 2}), "gen 2 2/2 Realized"},
		{"node-b failed", report("node-b", cp.PolicyRealization{Name: name, Generation: 2, Error: "rule 0: protocol \"ICMP\""}), "gen 2 1/2 Failed failed node-b"},
		{"node-a's report replaces its previous one", report("node-a"), "gen 2 0/2 Failed failed node-b"},
		{"node-b's error was for an older generation", report("node-b", cp.PolicyRealization{Name: name, Generation: 1, Error: "x"}), "gen 2 0/2 Realizing"},
		{"both realized", report("node-b", cp.PolicyRealization{Name: name, Generation: 2}), "gen 2 1/2 Realizing"},
		{"", report("node-a", cp.PolicyRealization{Name: name, Generation: 2}), "gen 2 2/2 Realized"},
	}
	for _, s := range steps {
		r.set(s.report, time.Now(), false)
		if got := get(); got != s.want {
			t.Errorf("%s: %s, want %s", s.what, got, s.want)
		}
	}
	e.np.mu.RLock()
	if e.np.version != version {
		t.Errorf("reports changed the hub's version from %d to %d: they must cause no watch event", version, e.np.version)
	}
	e.np.mu.RUnlock()

	// A second policy, so a list takes the path over every report entry;
	// it must agree with get.
	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny-client", UID: types.UID("uid-deny-client"), Generation: 5},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}},
	}
	if _, err := e.client.NetworkingV1().NetworkPolicies("default").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "second policy", func() bool { return len(e.np.list(agent("")).(*cp.NetworkPolicyList).Items) == 2 })
	r.set(report("node-b", cp.PolicyRealization{Name: name, Generation: 2}, cp.PolicyRealization{Name: "uid-deny-client", Generation: 5}), time.Now(), false)
	l := e.np.list(agent("")).(*cp.NetworkPolicyList)
	var got []string
	for _, np := range l.Items {
		got = append(got, np.SourceRef.Name+": "+renderStatus(np.Status))
		one, err := e.np.get(np.Name)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := renderStatus(one.(*cp.NetworkPolicy).Status), renderStatus(np.Status); g != w {
			t.Errorf("%s: get says %s, list %s", np.Name, g, w)
		}
	}
	slices.Sort(got)
	if want := []string{"allow-client: gen 2 2/2 Realized", "deny-client: gen 5 1/1 Realized"}; !slices.Equal(got, want) {
		t.Errorf("list:\n got %q\nwant %q", got, want)
	}

	// What agents list and watch never carries a status.
	for _, np := range e.np.list(agent("node-b")).(*cp.NetworkPolicyList).Items {
		if np.Status != nil {
			t.Errorf("node-b's list carries a status: %s", renderStatus(np.Status))
		}
	}
	w, err := e.np.watchFrom(agent(""), true, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	for range 2 {
		select {
		case ev := <-w.ResultChan():
			if np := ev.Object.(*cp.NetworkPolicy); np.Status != nil {
				t.Errorf("watch event %s carries a status", ev.Type)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no initial watch event")
		}
	}

	// kubectl's table.
	tbl, err := networkPolicyTable{}.ConvertToTable(ctx, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cols, rows []string
	for _, c := range tbl.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	for _, row := range tbl.Rows {
		rows = append(rows, strings.TrimSpace(fmt.Sprintln(row.Cells[1:]...)))
	}
	slices.Sort(rows)
	if g, w := strings.Join(cols, " "), "Name Source Generation Desired Realized Phase"; g != w {
		t.Errorf("columns %q, want %q", g, w)
	}
	if want := []string{"default/allow-client 2 2 2 Realized", "default/deny-client 5 1 1 Realized"}; !slices.Equal(rows, want) {
		t.Errorf("rows %q, want %q", rows, want)
	}
}

func TestReportStorage(t *testing.T) {
	s := newStatusStorage(newReports())
	ctx := context.Background()
	for _, bad := range []*cp.NodePolicyStatus{
		report(""),
		report("node-a", cp.PolicyRealization{Name: "p", Generation: 1}, cp.PolicyRealization{Name: "p", Generation: 2}),
		report("node-a", cp.PolicyRealization{Generation: 1}),
	} {
		if _, err := s.Create(ctx, bad, nil, &metav1.CreateOptions{}); !apierrors.IsBadRequest(err) {
			t.Errorf("report %q %v: %v, want 400 Bad Request", bad.Name, bad.Policies, err)
		}
	}
	if _, err := s.Create(ctx, report("node-a", cp.PolicyRealization{Name: "q", Generation: 1}), nil, &metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "node-a", nil); !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run: %v, want not found", err)
	}
	for _, rep := range []*cp.NodePolicyStatus{
		report("node-b", cp.PolicyRealization{Name: "q", Generation: 1}),
		report("node-a", cp.PolicyRealization{Name: "old", Generation: 1}),
		report("node-a", cp.PolicyRealization{Name: "q", Generation: 3}, cp.PolicyRealization{Name: "p", Generation: 2, Error: "bad"}),
	} {
		if _, err := s.Create(ctx, rep, nil, &metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	o, err := s.Get(ctx, "node-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(o.(*cp.NodePolicyStatus).Policies), "[{p 2 bad} {q 3 }]"; got != want {
		t.Errorf("node-a: %s, want %s (the last report, sorted)", got, want)
	}
	l, err := s.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range l.(*cp.NodePolicyStatusList).Items {
		names = append(names, it.Name)
	}
	if want := []string{"node-a", "node-b"}; !slices.Equal(names, want) {
		t.Errorf("list %v, want %v", names, want)
	}
	tbl, err := s.ConvertToTable(ctx, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, row := range tbl.Rows {
		// The last cell is the time since the report ("0s ago").
		age, _ := row.Cells[3].(string)
		if !strings.HasSuffix(age, "s ago") {
			t.Errorf("reported %q, want seconds ago", age)
		}
		rows = append(rows, strings.TrimSpace(fmt.Sprintln(row.Cells[:3]...)))
	}
	if want := []string{"node-a 2 1", "node-b 1 0"}; !slices.Equal(rows, want) || len(tbl.ColumnDefinitions) != 4 {
		t.Errorf("table rows %q (%d columns), want %q (4 columns)", rows, len(tbl.ColumnDefinitions), want)
	}
}

// TestReportFromANodeBoundCredential: a requester whose token is bound to a
// node (a pod's ServiceAccount token) reports for that node only; a
// credential bound to none is left to RBAC.
func TestReportFromANodeBoundCredential(t *testing.T) {
	s := newStatusStorage(newReports())
	agentOn := func(node string) context.Context {
		return request.WithUser(context.Background(), &user.DefaultInfo{
			Name:  "system:serviceaccount:kube-system:seine-agent",
			Extra: map[string][]string{nodeNameExtra: {node}},
		})
	}
	if _, err := s.Create(agentOn("node-a"), report("node-a", cp.PolicyRealization{Name: "p", Generation: 1}), nil, &metav1.CreateOptions{}); err != nil {
		t.Errorf("node-a's agent reporting for node-a: %v", err)
	}
	_, err := s.Create(agentOn("node-a"), report("node-b", cp.PolicyRealization{Name: "p", Generation: 1}), nil, &metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "node-a") {
		t.Errorf("node-a's agent reporting for node-b: %v, want 403 naming node-a", err)
	}
	if _, err := s.Get(context.Background(), "node-b", nil); !apierrors.IsNotFound(err) {
		t.Errorf("the refused report was kept: %v", err)
	}
	static := request.WithUser(context.Background(), &user.DefaultInfo{Name: "seine-agent"})
	if _, err := s.Create(static, report("node-b", cp.PolicyRealization{Name: "p", Generation: 1}), nil, &metav1.CreateOptions{}); err != nil {
		t.Errorf("a credential bound to no node: %v", err)
	}
}

// TestReportsOfTrackedNodes: with the nodes tracked, a report for a node
// that does not exist (or while the nodes are not listed yet) is refused
// with the tracker's error, and a node that leaves takes its report along.
func TestReportsOfTrackedNodes(t *testing.T) {
	r := newReports()
	s := newStatusStorage(r)
	nodes := map[string]bool{"node-a": true}
	synced := false
	r.nodeExists = func(name string) error {
		switch {
		case !synced:
			return NodesNotSynced()
		case !nodes[name]:
			return NodeNotFound(name)
		}
		return nil
	}
	ctx := context.Background()
	rep := func(node string) error {
		_, err := s.Create(ctx, report(node, cp.PolicyRealization{Name: "p", Generation: 1}), nil, &metav1.CreateOptions{})
		return err
	}
	if err := rep("node-a"); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("before the nodes are listed: %v, want 503", err)
	}
	synced = true
	if err := rep("node-a"); err != nil {
		t.Fatal(err)
	}
	if err := rep("node-gone"); !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "node-gone") {
		t.Errorf("report for a node that does not exist: %v, want 404", err)
	}
	dry := &metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	if _, err := s.Create(ctx, report("node-gone"), nil, dry); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run report for a node that does not exist: %v, want 404 as for a real one", err)
	}
	if l := r.list(); len(l.Items) != 1 {
		t.Errorf("%d reports kept, want node-a's only", len(l.Items))
	}
	delete(nodes, "node-a")
	r.forget("node-a")
	if _, err := s.Get(ctx, "node-a", nil); !apierrors.IsNotFound(err) {
		t.Errorf("the report of a node that left: %v, want gone", err)
	}
	if err := rep("node-a"); !apierrors.IsNotFound(err) {
		t.Errorf("a late report of a node that left: %v, want 404", err)
	}
}

// A policy part of which the controller could not translate (a leading-zero
// CIDR an older apiserver stored) is Failed with the reason, even when
// every node of its span realized what it was sent: what the user asked
// for is not what is enforced. Fixed, it is Realized again.
func TestStatusOfAPartlyTranslatedPolicy(t *testing.T) {
	e := startHubs(t)
	r := newReports()
	e.np.status = r.fill
	ctx := context.Background()
	const name = "uid-allow-client"
	nps := e.client.NetworkingV1().NetworkPolicies("default")
	np, err := nps.Get(ctx, "allow-client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np.Generation = 3
	np.Spec.Ingress[0].From = append(np.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "010.0.0.0/8"}})
	if _, err := nps.Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() *cp.NetworkPolicyStatus {
		t.Helper()
		o, err := e.np.get(name)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*cp.NetworkPolicy).Status
	}
	poll(t, "generation 3", func() bool { return get().Generation == 3 })
	if _, err := r.set(report("node-a", cp.PolicyRealization{Name: name, Generation: 3}), time.Now(), false); err != nil {
		t.Fatal(err)
	}
	st := get()
	if got := renderStatus(st); got != "gen 3 1/1 Failed" || !strings.Contains(st.Error, `parse cidr "010.0.0.0/8"`) {
		t.Errorf("status %s, error %q: want Failed 1/1 with the CIDR named", got, st.Error)
	}
	l := e.np.list(agent("")).(*cp.NetworkPolicyList)
	if len(l.Items) != 1 || l.Items[0].Status.Phase != cp.PolicyFailed {
		t.Errorf("listed status %+v: want Failed", l.Items[0].Status)
	}

	np.Generation = 4
	np.Spec.Ingress[0].From[1].IPBlock.CIDR = "10.0.0.0/8"
	if _, err := nps.Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "generation 4", func() bool { return get().Generation == 4 })
	if _, err := r.set(report("node-a", cp.PolicyRealization{Name: name, Generation: 4}), time.Now(), false); err != nil {
		t.Fatal(err)
	}
	if st := get(); renderStatus(st) != "gen 4 1/1 Realized" || st.Error != "" {
		t.Errorf("fixed policy: status %s, error %q", renderStatus(st), st.Error)
	}
}
