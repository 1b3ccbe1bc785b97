// Package policystats turns the counters of a node's policy flows into
// per-rule traffic totals (sessions, packets, bytes) that survive agent
// restarts, OVS counter resets and controller restarts. It is pure: the
// agent hands it flow dumps and the rules' flows (pipeline.PolicyCounters),
// and sends Report to seine-controller, which sums the nodes. README.md
// says what is counted and what resets.
package policystats

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Counts are the traffic of a rule.
type Counts struct {
	Sessions uint64 `json:"sessions"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
}

// Add returns c plus o.
func (c Counts) Add(o Counts) Counts {
	return Counts{Sessions: c.Sessions + o.Sessions, Packets: c.Packets + o.Packets, Bytes: c.Bytes + o.Bytes}
}

// Rule names a rule: its internal policy's name (the user policy's UID)
// and its index in the policy's rules. The parts of a rule the node splits
// (a named port meaning several numbers) count as the rule.
type Rule struct {
	Policy string `json:"policy"`
	Index  int    `json:"index"`
}

// flowCount is what a flow's counters said at the last dump.
type flowCount struct {
	Packets uint64 `json:"p"`
	Bytes   uint64 `json:"b"`
}

// Totals are a node's running totals per rule. The zero value is not
// usable: call New or Load.
type Totals struct {
	rules map[Rule]Counts
	// since is when the node first counted each policy; last when the
	// node last had it.
	since, last map[string]time.Time
	// seen are the policy flows' counters at the last dump, by
	// pipeline.CounterKey: the next dump counts what they grew by.
	seen map[string]flowCount
}

// New returns empty totals.
func New() *Totals {
	return &Totals{rules: map[Rule]Counts{}, since: map[string]time.Time{}, last: map[string]time.Time{}, seen: map[string]flowCount{}}
}

// Retention is how long a node keeps the totals of a policy it no longer
// has (the policy's pods left the node, or it was deleted). Within it, a
// policy that comes back counts on from its totals, so the cluster's sum
// does not drop when a pod moves away and back; seine-controller shows
// only policies that exist, so a deleted one's totals are merely kept.
const Retention = 7 * 24 * time.Hour

// Observe counts one dump of the node's policy flows. counters names the
// flows that count for a rule (pipeline.PolicyCounters of the installed
// set); keep tells the policies the node still has: the totals of others
// are dropped after Retention. It returns what the dump added to the
// totals (the node's traffic since the last dump, for its metrics) and
// whether any total changed.
//
// A flow counts what it grew by since the last dump. Counters that went
// down mean the flow was deleted and added again (ovs-vswitchd restarted,
// or the rule's flows went and came back): it then counts all it has. A
// flow missing from the dump is forgotten, so when it comes back it counts
// from zero. A flow no rule names (the mapping is not known yet, as right
// after an agent restart) keeps its last reading, so nothing is lost or
// counted twice once it is named again. An add that replaces a flow in
// place (an agent's replay) keeps its counters (ovs/openflow
// TestReplacedFlowCounters), so a restarted agent that loaded its totals
// counts on without counting twice.
func (t *Totals) Observe(dump []openflow.FlowStats, counters map[string]pipeline.RuleCounter, keep func(policy string) bool, now time.Time) (added Counts, changed bool) {
	present := make(map[string]bool, len(dump))
	for _, fs := range dump {
		key := pipeline.CounterKey(fs.Flow)
		present[key] = true
		rc, named := counters[key]
		if !named {
			continue
		}
		cur := flowCount{Packets: fs.PacketCount, Bytes: fs.ByteCount}
		d := cur
		if prev, ok := t.seen[key]; ok && cur.Packets >= prev.Packets && cur.Bytes >= prev.Bytes {
			d = flowCount{Packets: cur.Packets - prev.Packets, Bytes: cur.Bytes - prev.Bytes}
		}
		t.seen[key] = cur
		r := Rule{Policy: rc.Policy, Index: ruleIndex(rc.Key)}
		if _, ok := t.since[r.Policy]; !ok {
			t.since[r.Policy] = now
			changed = true
		}
		if d.Packets == 0 && d.Bytes == 0 {
			if _, ok := t.rules[r]; !ok {
				t.rules[r] = Counts{}
				changed = true
			}
			continue
		}
		add := Counts{Packets: d.Packets, Bytes: d.Bytes}
		if rc.Kind == pipeline.CountFirst {
			add.Sessions = d.Packets
		}
		t.rules[r] = t.rules[r].Add(add)
		added = added.Add(add)
		changed = true
	}
	for key := range t.seen {
		if !present[key] {
			delete(t.seen, key)
		}
	}
	for p := range t.since {
		if keep(p) {
			t.last[p] = now
		} else if last, ok := t.last[p]; !ok {
			t.last[p] = now
		} else if now.Sub(last) > Retention {
			delete(t.since, p)
			delete(t.last, p)
			changed = true
		}
	}
	for r := range t.rules {
		if _, ok := t.since[r.Policy]; !ok {
			delete(t.rules, r)
		}
	}
	return added, changed
}

// ruleIndex is the rule's index in its policy: the Key up to its first
// slash ("3", or "3/6/8080" for a part of a split named port).
func ruleIndex(key string) int {
	head, _, _ := strings.Cut(key, "/")
	i, err := strconv.Atoi(head)
	if err != nil {
		return -1
	}
	return i
}

// PolicyTotals are one policy's totals on the node.
type PolicyTotals struct {
	Policy string
	Since  time.Time
	Rules  []RuleTotals // by index
}

// RuleTotals are one rule's totals.
type RuleTotals struct {
	Index int
	Counts
}

// Report lists the totals by policy name, rules by index.
func (t *Totals) Report() []PolicyTotals {
	byPolicy := map[string]*PolicyTotals{}
	for r, c := range t.rules {
		p := byPolicy[r.Policy]
		if p == nil {
			p = &PolicyTotals{Policy: r.Policy, Since: t.since[r.Policy]}
			byPolicy[r.Policy] = p
		}
		p.Rules = append(p.Rules, RuleTotals{Index: r.Index, Counts: c})
	}
	out := make([]PolicyTotals, 0, len(byPolicy))
	for _, p := range byPolicy {
		slices.SortFunc(p.Rules, func(a, b RuleTotals) int { return cmp.Compare(a.Index, b.Index) })
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b PolicyTotals) int { return cmp.Compare(a.Policy, b.Policy) })
	return out
}

// fileVersion is the format of the totals file; another is ignored.
const fileVersion = 1

type file struct {
	Version int                  `json:"version"`
	Rules   []ruleEntry          `json:"rules"`
	Since   map[string]time.Time `json:"since"`
	Last    map[string]time.Time `json:"last"`
	Seen    map[string]flowCount `json:"seen"`
}

type ruleEntry struct {
	Rule
	Counts
}

// Save writes the totals and the last readings to path: a temporary file
// fsynced and renamed over it, so a crash leaves the old or the new one.
func (t *Totals) Save(path string) error {
	f := file{Version: fileVersion, Since: t.since, Last: t.last, Seen: t.seen}
	for r, c := range t.rules {
		f.Rules = append(f.Rules, ruleEntry{r, c})
	}
	slices.SortFunc(f.Rules, func(a, b ruleEntry) int {
		return cmp.Or(cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Index, b.Index))
	})
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".policy-stats-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write policy stats: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// Load reads totals Save wrote; a missing file gives empty totals.
func Load(path string) (*Totals, error) {
	t := New()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return t, err
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return t, fmt.Errorf("decode policy stats %s: %w", path, err)
	}
	if f.Version != fileVersion {
		return t, fmt.Errorf("policy stats %s has version %d, want %d", path, f.Version, fileVersion)
	}
	for _, e := range f.Rules {
		t.rules[e.Rule] = e.Counts
	}
	for k, v := range f.Since {
		t.since[k] = v
	}
	for k, v := range f.Last {
		t.last[k] = v
	}
	for k, v := range f.Seen {
		t.seen[k] = v
	}
	return t, nil
}
