// Package policywatch keeps an agent's policy state in step with
// seine-controller: it lists and watches the node's span of
// controlplane.seine.io (NetworkPolicies, AppliedToGroups, AddressGroups),
// applies group patches, and hands the whole state to a Syncer (the agent's
// policy.Controller). See README.md.
package policywatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/seine-cni/seine/core/agent/policy"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// Syncer takes the node's whole policy state; policy.Controller is one. It
// owns the maps it is given; the objects in them are never modified.
type Syncer interface {
	Sync(ctx context.Context, s policy.State) error
}

// Options tune a Watcher; the zero value is the default.
type Options struct {
	// Incomplete is how long the watcher waits, when a NetworkPolicy refers
	// to a group it has not received, for that group before it lists
	// everything again. It never syncs such a state: the node keeps
	// enforcing the last complete one. Default 10s.
	Incomplete time.Duration
	// MaxBackoff caps the wait between attempts after an error. Default 30s.
	MaxBackoff time.Duration
	// Report, when set, is reported to the controller by a Reporter that
	// runs with the watcher: after every change of its realizations, and
	// after every (re)list, so a restarted controller learns the node's
	// state again.
	Report Realizer
	// Reporter tunes that Reporter.
	Reporter ReporterOptions
}

// Watcher follows the controlplane API for one node.
type Watcher struct {
	client *Client
	syncer Syncer
	log    *slog.Logger
	opts   Options
	report *Reporter // nil without Options.Report

	syncs   atomic.Int64
	relists atomic.Int64
	// connected is true while a session has its state listed and follows
	// the watches; lastErr is what ended the last session.
	connected atomic.Bool
	lastErr   atomic.Pointer[string]
}

// New returns a Watcher of node's span at cfg that syncs into s.
func New(cfg *rest.Config, node string, s Syncer, log *slog.Logger, o Options) (*Watcher, error) {
	c, err := NewClient(cfg, node)
	if err != nil {
		return nil, err
	}
	return newWatcher(c, s, log, o), nil
}

func newWatcher(c *Client, s Syncer, log *slog.Logger, o Options) *Watcher {
	if o.Incomplete == 0 {
		o.Incomplete = 10 * time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	w := &Watcher{client: c, syncer: s, log: log, opts: o}
	if o.Report != nil {
		w.report = NewReporter(c, o.Report, log, o.Reporter)
	}
	return w
}

// Reporter is the watcher's Reporter, nil without Options.Report.
func (w *Watcher) Reporter() *Reporter { return w.report }

// Syncs is the number of successful Sync calls; Relists the number of
// times the state was listed (the first time included).
func (w *Watcher) Syncs() int64   { return w.syncs.Load() }
func (w *Watcher) Relists() int64 { return w.relists.Load() }

// Connected says whether the watcher has the controller's state and
// follows it; when not, why (the error that ended the last session, or
// that none has listed the state yet).
func (w *Watcher) Connected() (bool, string) {
	if w.connected.Load() {
		return true, ""
	}
	if e := w.lastErr.Load(); e != nil {
		return false, *e
	}
	return false, "the controller's state has not been listed yet"
}

// Run follows the API until ctx ends. Only complete states are synced: all
// three lists are in, and every group a policy refers to is present (a
// policy without its AppliedToGroup would leave its pods unisolated, one
// without its AddressGroups would drop allowed traffic), so the node never
// enforces a partial policy set. After any error (watch refused, 410 Gone,
// controller restarted, Sync failed, a group missing for longer than
// Options.Incomplete) it lists everything again and syncs the whole state
// once it is complete: the node keeps its previous flows until then,
// without a gap.
func (w *Watcher) Run(ctx context.Context) error {
	if w.report != nil {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); w.report.Run(ctx) }()
		defer func() { cancel(); <-done }()
	}
	backoff := time.Second
	for {
		start := time.Now()
		err := w.session(ctx)
		w.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		msg := fmt.Sprint(err)
		w.lastErr.Store(&msg)
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		wait := backoff
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			wait = 0 // the watch fell behind: list again at once
		} else {
			backoff = min(2*backoff, w.opts.MaxBackoff)
		}
		w.log.Warn("controlplane watch ended; listing again", "err", err, "after", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// state is the node's policy state as received.
type state struct {
	nps  map[string]*cp.NetworkPolicy
	atgs map[string]*cp.AppliedToGroup
	ags  map[string]*cp.AddressGroup
}

func (s *state) snapshot() policy.State {
	return policy.State{NetworkPolicies: maps.Clone(s.nps), AppliedToGroups: maps.Clone(s.atgs), AddressGroups: maps.Clone(s.ags)}
}

// dangling reports whether a policy refers to a group not received yet.
func (s *state) dangling() bool { return len(s.missing(1)) > 0 }

// missing names up to limit groups that policies refer to and the state
// lacks, as "policy -> kind name".
func (s *state) missing(limit int) []string {
	var out []string
	for _, np := range s.nps {
		for _, g := range np.AppliedToGroups {
			if s.atgs[g] == nil {
				out = append(out, np.Name+" -> AppliedToGroup "+g)
			}
		}
		for _, r := range np.Rules {
			for _, g := range r.AppliedToGroups {
				if s.atgs[g] == nil && !slices.Contains(np.AppliedToGroups, g) {
					out = append(out, np.Name+" -> AppliedToGroup "+g)
				}
			}
			for _, g := range slices.Concat(r.From.AddressGroups, r.To.AddressGroups) {
				if s.ags[g] == nil {
					out = append(out, np.Name+" -> AddressGroup "+g)
				}
			}
		}
		if len(out) >= limit {
			return out[:limit]
		}
	}
	return out
}

// errIncomplete ends a session whose state lacked a group for longer than
// Options.Incomplete.
var errIncomplete = errors.New("policies refer to groups the controller has not sent")

type event struct {
	resource string
	ev       watch.Event
	err      error
}

func (w *Watcher) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.relists.Add(1)
	st := &state{nps: map[string]*cp.NetworkPolicy{}, atgs: map[string]*cp.AppliedToGroup{}, ags: map[string]*cp.AddressGroup{}}
	w.client.AskTiered()
	atgs, err := w.client.ListAppliedToGroups(ctx)
	if err != nil {
		return err
	}
	nps, err := w.client.ListNetworkPolicies(ctx)
	if err != nil {
		return err
	}
	ags, err := w.client.ListAddressGroups(ctx)
	if err != nil {
		return err
	}
	for i := range atgs.Items {
		st.atgs[atgs.Items[i].Name] = &atgs.Items[i]
	}
	for i := range nps.Items {
		st.nps[nps.Items[i].Name] = &nps.Items[i]
	}
	for i := range ags.Items {
		st.ags[ags.Items[i].Name] = &ags.Items[i]
	}
	// The three lists are taken one after another, so a policy may refer
	// to a group that was created after its list was taken: such a state
	// is not synced; the watches bring what it lacks.
	if err := w.syncComplete(ctx, st); err != nil {
		return err
	}
	if w.report != nil {
		w.report.Kick() // the controller may have restarted: report everything again
	}
	w.connected.Store(true)
	w.log.Info("controlplane state listed", "networkPolicies", len(st.nps), "appliedToGroups", len(st.atgs), "addressGroups", len(st.ags))
	if w.client.Untiered() {
		w.log.Warn("the controller refused tiered=true: it is older than tiered policy and serves none; watching without it until the next session")
	}

	events := make(chan event, 64)
	for resource, rv := range map[string]string{NetworkPolicies: nps.ResourceVersion, AppliedToGroups: atgs.ResourceVersion, AddressGroups: ags.ResourceVersion} {
		go w.follow(ctx, resource, rv, events)
	}
	// incomplete runs while the state lacks a group a policy refers to.
	var incomplete <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if st.dangling() {
			if timer == nil {
				timer = time.NewTimer(w.opts.Incomplete)
				incomplete = timer.C
			}
		} else if timer != nil {
			timer.Stop()
			timer, incomplete = nil, nil
		}
		var e event
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-incomplete:
			return fmt.Errorf("%w for %s: %s", errIncomplete, w.opts.Incomplete, strings.Join(st.missing(5), ", "))
		case e = <-events:
		}
		if err := w.apply(st, e); err != nil {
			return err
		}
		// Take what else is pending, so one Sync covers a whole change.
	drain:
		for {
			select {
			case e = <-events:
				if err := w.apply(st, e); err != nil {
					return err
				}
			default:
				break drain
			}
		}
		if err := w.syncComplete(ctx, st); err != nil {
			return err
		}
	}
}

// syncComplete syncs st unless a policy refers to a group st lacks.
func (w *Watcher) syncComplete(ctx context.Context, st *state) error {
	if missing := st.missing(3); len(missing) > 0 {
		w.log.Debug("policy state incomplete; waiting for its groups", "missing", strings.Join(missing, ", "))
		return nil
	}
	return w.sync(ctx, st)
}

func (w *Watcher) sync(ctx context.Context, st *state) error {
	if err := w.syncer.Sync(ctx, st.snapshot()); err != nil {
		return fmt.Errorf("sync policies: %w", err)
	}
	w.syncs.Add(1)
	return nil
}

// follow watches one resource from rv, resuming after a watch the server
// ended normally, and reports events, or the error that ends the session.
func (w *Watcher) follow(ctx context.Context, resource, rv string, out chan<- event) {
	send := func(e event) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		wi, err := w.client.Watch(ctx, resource, rv)
		if err != nil {
			send(event{resource: resource, err: err})
			return
		}
		for ev := range wi.ResultChan() {
			if ev.Type == watch.Error {
				wi.Stop()
				send(event{resource: resource, err: fmt.Errorf("watch %s: %w", resource, apierrors.FromObject(ev.Object))})
				return
			}
			if m, ok := ev.Object.(metav1.Object); ok && m.GetResourceVersion() != "" {
				rv = m.GetResourceVersion()
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			if !send(event{resource: resource, ev: ev}) {
				wi.Stop()
				return
			}
		}
		wi.Stop()
	}
}

var errUnexpected = errors.New("unexpected watch event")

func (w *Watcher) apply(st *state, e event) error {
	if e.err != nil {
		return e.err
	}
	del := e.ev.Type == watch.Deleted
	switch o := e.ev.Object.(type) {
	case *cp.NetworkPolicy:
		put(st.nps, o.Name, o, del)
	case *cp.AppliedToGroup:
		put(st.atgs, o.Name, o, del)
	case *cp.AddressGroup:
		put(st.ags, o.Name, o, del)
	case *cp.AppliedToGroupPatch:
		old := st.atgs[o.Name]
		if old == nil {
			return fmt.Errorf("%w: patch of unknown AppliedToGroup %s", errUnexpected, o.Name)
		}
		g := &cp.AppliedToGroup{TypeMeta: old.TypeMeta, ObjectMeta: old.ObjectMeta, Members: patchMembers(old.Members, o.AddedMembers, o.RemovedMembers)}
		g.ResourceVersion = o.ResourceVersion
		st.atgs[o.Name] = g
	case *cp.AddressGroupPatch:
		old := st.ags[o.Name]
		if old == nil {
			return fmt.Errorf("%w: patch of unknown AddressGroup %s", errUnexpected, o.Name)
		}
		g := &cp.AddressGroup{TypeMeta: old.TypeMeta, ObjectMeta: old.ObjectMeta, Members: patchMembers(old.Members, o.AddedMembers, o.RemovedMembers)}
		g.ResourceVersion = o.ResourceVersion
		st.ags[o.Name] = g
	default:
		return fmt.Errorf("%w: %s %T on %s", errUnexpected, e.ev.Type, e.ev.Object, e.resource)
	}
	return nil
}

func put[T any](m map[string]T, name string, o T, del bool) {
	if del {
		delete(m, name)
	} else {
		m[name] = o
	}
}

// patchMembers returns a new member list: old without removed, plus added.
func patchMembers(old, added, removed []cp.GroupMember) []cp.GroupMember {
	gone := make(map[string]int, len(removed))
	for i := range removed {
		gone[cp.MemberKey(&removed[i])]++
	}
	out := make([]cp.GroupMember, 0, max(0, len(old)+len(added)-len(removed)))
	for i := range old {
		k := cp.MemberKey(&old[i])
		if gone[k] > 0 {
			gone[k]--
			continue
		}
		out = append(out, old[i])
	}
	return append(out, added...)
}
