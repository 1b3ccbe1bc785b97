package netpol

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// realization says whether every NetworkPolicy of the suite's namespaces is
// realized, as seine-controller reports it through the aggregated API
// (`kubectl get networkpolicies.controlplane.seine.io`): each one at its
// current generation on every node of its span, and no node still reporting
// a policy that was deleted. pending says what is not there yet; err is set
// when a node failed to enforce a policy (that will not heal by waiting).
//
// Membership changes (labels) have no generation: a step that only relabels
// is realized when its matrices match.
func (s *suite) realization() (done bool, pending string, err error) {
	type want struct {
		name string
		gen  int64
	}
	wants := map[string]want{} // internal name (the policy's UID) -> policy
	for _, ns := range namespaceNames {
		l, err := s.cs.NetworkingV1().NetworkPolicies(ns).List(s.ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", fmt.Errorf("list NetworkPolicies of %s: %w", ns, err)
		}
		for _, p := range l.Items {
			wants[string(p.UID)] = want{ns + "/" + p.Name, p.Generation}
		}
	}
	cps, err := s.cp.ControlplaneV1beta1().NetworkPolicies().List(s.ctx, metav1.ListOptions{})
	if err != nil {
		return false, "", fmt.Errorf("list networkpolicies.controlplane.seine.io: %w", err)
	}
	have := map[string]*cp.NetworkPolicy{}
	for i := range cps.Items {
		have[cps.Items[i].Name] = &cps.Items[i]
	}
	var waiting []string
	for uid, w := range wants {
		p, ok := have[uid]
		switch {
		case !ok:
			waiting = append(waiting, w.name+": not computed yet")
		case p.Status == nil:
			waiting = append(waiting, w.name+": no status")
		case p.Status.Phase == cp.PolicyFailed && p.Status.Generation == w.gen:
			return false, "", fmt.Errorf("%s generation %d %w on %v", w.name, w.gen, errFailed, p.Status.FailedNodes)
		case p.Status.Generation != w.gen || p.Status.Phase != cp.PolicyRealized:
			waiting = append(waiting, fmt.Sprintf("%s: generation %d wanted, status generation %d, %d/%d realized, %s",
				w.name, w.gen, p.Status.Generation, p.Status.RealizedNodes, p.Status.DesiredNodes, p.Status.Phase))
		}
	}
	reports, err := s.cp.ControlplaneV1beta1().NodePolicyStatuses().List(s.ctx, metav1.ListOptions{})
	if err != nil {
		return false, "", fmt.Errorf("list nodepolicystatuses: %w", err)
	}
	for _, r := range reports.Items {
		for _, p := range r.Policies {
			if _, ok := wants[p.Name]; !ok {
				waiting = append(waiting, fmt.Sprintf("%s still reports deleted policy %s", r.Name, p.Name))
			}
		}
	}
	sort.Strings(waiting)
	return len(waiting) == 0, strings.Join(waiting, "; "), nil
}

// realizeTimeout bounds waitRealized. Realization normally follows the
// matching matrices within a few hundred milliseconds, but after
// seine-controller restarts, the aggregated API answers 503 until the
// kube-apiserver sees the APIService available again (15 s measured on a
// loaded 2-core machine), and agents report again only after that.
const realizeTimeout = 30 * time.Second

// errFailed marks a policy a node failed to enforce: waiting will not help.
var errFailed = errors.New("failed")

// waitRealized polls realization every 100 ms until it holds, and returns
// how long it waited. Errors reading the status (the aggregated API being
// unavailable) count as not realized yet.
func (s *suite) waitRealized(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		done, pending, err := s.realization()
		switch {
		case errors.Is(err, errFailed):
			return time.Since(start), err
		case err != nil:
			pending = err.Error()
		case done:
			return time.Since(start), nil
		}
		if time.Since(start) > timeout || s.ctx.Err() != nil {
			return time.Since(start), errors.New("not realized after " + timeout.String() + ": " + pending)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
