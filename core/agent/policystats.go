package agent

import (
	"context"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/client/clientset/versioned"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/policystats"
	"github.com/seine-cni/seine/ovs/openflow"
)

// DefaultPolicyStatsInterval is how often the agent reads its policy
// flows' counters when the configuration sets no policyStatsInterval
// (Antrea: 60 s). A report to seine-controller follows every read that
// changed a total, and at least every policyStatsHeartbeat reads, so a
// restarted controller has every node's totals again within that time.
const DefaultPolicyStatsInterval = 10 * time.Second

const policyStatsHeartbeat = 6

// policyStatsFile keeps the node's totals and last readings across
// restarts.
func policyStatsFile(cfg *Config) string {
	return filepath.Join(cfg.StateDir, "policy", "stats.json")
}

// runPolicyStats reads the policy flows' counters every interval, adds
// what they grew by to the node's totals (core/policystats), keeps them on
// disk and reports them to seine-controller.
func (a *Agent) runPolicyStats(ctx context.Context) {
	log := a.log.With("component", "policystats")
	path := policyStatsFile(a.cfg)
	totals, err := policystats.Load(path)
	if err != nil {
		log.Warn("policy stats file not loaded: totals start again", "err", err)
	}
	var reports interface {
		Create(context.Context, *cp.NodePolicyStatsReport, metav1.CreateOptions) (*cp.NodePolicyStatsReport, error)
	}
	if a.controlPlane != nil {
		cs, err := versioned.NewForConfig(a.controlPlane)
		if err != nil {
			log.Error("policy stats not reported", "err", err)
		} else {
			reports = cs.ControlplaneV1beta1().NodePolicyStatsReports()
		}
	}
	interval := a.cfg.PolicyStatsInterval.Duration
	if interval <= 0 {
		interval = DefaultPolicyStatsInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	dirty, sinceReport := true, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		added, changed, err := a.observePolicyStats(ctx, totals)
		if err != nil {
			log.Debug("policy flows not read", "err", err)
			continue
		}
		a.m.PolicyTraffic(added.Sessions, added.Packets, added.Bytes)
		if changed {
			if err := totals.Save(path); err != nil {
				log.Warn("policy stats not saved", "err", err)
			}
		}
		dirty = dirty || changed
		if sinceReport++; reports == nil || (!dirty && sinceReport < policyStatsHeartbeat) {
			continue
		}
		if _, err := reports.Create(ctx, a.policyStatsReport(totals), metav1.CreateOptions{}); err != nil {
			log.Warn("policy stats not reported; retrying", "err", err)
			continue
		}
		dirty, sinceReport = false, 0
	}
}

// observePolicyStats reads the policy flows once and counts them.
func (a *Agent) observePolicyStats(ctx context.Context, totals *policystats.Totals) (policystats.Counts, bool, error) {
	rules := a.policy.InstalledRules()
	counters, err := pipeline.PolicyCounters(pipeline.PolicySet{Rules: rules})
	if err != nil {
		return policystats.Counts{}, false, err
	}
	var dump []openflow.FlowStats
	err = a.sw.DoNow(ctx, func(w FlowWriter) error {
		var err error
		dump, err = w.DumpFlows(ctx, openflow.TableAll, uint64(pipeline.NewCookie(0, pipeline.CategoryPolicy, 0)),
			pipeline.CategoryMask&^pipeline.RoundMask)
		return err
	})
	if err != nil {
		return policystats.Counts{}, false, err
	}
	keep := map[string]bool{}
	for _, r := range rules {
		keep[r.Policy] = true
	}
	for name := range a.policy.Realizations() {
		keep[name] = true
	}
	added, changed := totals.Observe(dump, counters, func(p string) bool { return keep[p] }, time.Now())
	return added, changed, nil
}

// policyStatsReport is the node's report: its totals, policies by name.
func (a *Agent) policyStatsReport(totals *policystats.Totals) *cp.NodePolicyStatsReport {
	r := &cp.NodePolicyStatsReport{TypeMeta: metav1.TypeMeta{APIVersion: cp.SchemeGroupVersion.String(), Kind: "NodePolicyStatsReport"}}
	r.Name = a.cfg.NodeName
	for _, p := range totals.Report() {
		ps := cp.PolicyTrafficStats{Name: p.Policy, Since: metav1.NewTime(p.Since)}
		for _, ru := range p.Rules {
			ps.Rules = append(ps.Rules, cp.RuleTrafficStats{Index: int32(ru.Index), TrafficStats: cp.TrafficStats{
				Sessions: int64(ru.Sessions), Packets: int64(ru.Packets), Bytes: int64(ru.Bytes),
			}})
		}
		r.Policies = append(r.Policies, ps)
	}
	return r
}
