package policywatch

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/agent/policy"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// Realizer is what a Reporter reports; policy.Controller is one.
type Realizer interface {
	// Realizations are the node's realized (and failed) policies.
	Realizations() map[string]policy.Realization
	// RealizationsChanged is signalled, without blocking the signaller,
	// after Realizations changed.
	RealizationsChanged() <-chan struct{}
}

// ReporterOptions tune a Reporter; the zero value is the default.
type ReporterOptions struct {
	// Debounce is how long the reporter waits after a change for more
	// before it reports, so that a burst is one report. Default 200ms.
	Debounce time.Duration
	// Backoff is the first wait after a failed report; it doubles up to
	// MaxBackoff. Defaults 1s and 30s.
	Backoff, MaxBackoff time.Duration
}

// Reporter sends a node's whole realized policy set to seine-controller
// (a create of the node's NodePolicyStatus) once when it starts, after
// every change of the set, and whenever it is kicked (the watch
// reconnected: the controller may have restarted and forgotten). Reports
// are debounced and retried with backoff, which a kick cuts short. The
// policy controller only ever signals it without blocking, so reporting
// never delays enforcement.
type Reporter struct {
	client *Client
	src    Realizer
	log    *slog.Logger
	opts   ReporterOptions
	kick   chan struct{}

	reports atomic.Int64
}

// NewReporter returns a Reporter of src's realizations through c, for the
// node c was made for.
func NewReporter(c *Client, src Realizer, log *slog.Logger, o ReporterOptions) *Reporter {
	if o.Debounce == 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.Backoff == 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	return &Reporter{client: c, src: src, log: log, opts: o, kick: make(chan struct{}, 1)}
}

// Kick asks for a report of the whole set soon, even if it did not change.
func (r *Reporter) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Reports is the number of reports the controller accepted.
func (r *Reporter) Reports() int64 { return r.reports.Load() }

// Run reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	backoff := r.opts.Backoff
	pending := true // the first report, as soon as it can be made
	for {
		if !pending {
			select {
			case <-ctx.Done():
				return
			case <-r.kick:
			case <-r.src.RealizationsChanged():
			}
		}
		// Let a burst of changes settle into one report. The wait is not
		// extended by later signals, so a report is at most Debounce late.
		debounce := time.NewTimer(r.opts.Debounce)
	settle:
		for {
			select {
			case <-ctx.Done():
				debounce.Stop()
				return
			case <-r.kick:
			case <-r.src.RealizationsChanged():
			case <-debounce.C:
				break settle
			}
		}
		st := r.status()
		if err := r.client.Report(ctx, st); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("policy realization not reported; retrying", "err", err, "in", backoff)
			pending = true
			// A kick means the watch just listed: the controller is back,
			// and may have restarted without any report. It ends the wait.
			wait := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-r.kick:
			case <-wait.C:
			}
			wait.Stop()
			backoff = min(2*backoff, r.opts.MaxBackoff)
			continue
		}
		r.reports.Add(1)
		r.log.Debug("policy realization reported", "policies", len(st.Policies))
		pending, backoff = false, r.opts.Backoff
	}
}

var reportTypeMeta = metav1.TypeMeta{APIVersion: cp.SchemeGroupVersion.String(), Kind: "NodePolicyStatus"}

// status is the node's report: every policy of the Realizer, sorted.
func (r *Reporter) status() *cp.NodePolicyStatus {
	rs := r.src.Realizations()
	st := &cp.NodePolicyStatus{TypeMeta: reportTypeMeta, Policies: make([]cp.PolicyRealization, 0, len(rs))}
	st.Name = r.client.node
	for name, p := range rs {
		st.Policies = append(st.Policies, cp.PolicyRealization{Name: name, Generation: p.Generation, Error: p.Error})
	}
	slices.SortFunc(st.Policies, func(a, b cp.PolicyRealization) int { return cmp.Compare(a.Name, b.Name) })
	return st
}
