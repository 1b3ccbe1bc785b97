package traceflow

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Following flow changes: a trace's copies are made from the switch's
// flows when it starts, and every flow the agent adds, replaces or deletes
// while it runs changes them too (a policy realized, a Service's
// endpoints, a new pod). A Shadow holds the switch's flows as the copies
// were made from them and turns each committed change into the copy
// changes that keep every running trace in step: the copies of the flows
// it added or replaced, the deletes of the copies of the flows it removed,
// and the copies of the neighbours whose "one priority up is free" test
// it changed. Nothing is copied again that did not change.

// ErrCannotFollow: a change the Shadow cannot follow exactly (a delete
// that may hit the traces' own flows, a non-strict modify, a table that
// starts or stops being resubmitted to); the caller copies everything
// again from a fresh dump.
var ErrCannotFollow = errors.New("flow change cannot be followed")

// A Shadow is the switch's flows, all but the traces' own, and the copies
// each running trace has of them. It is not safe for concurrent use: the
// agent touches it under its flow lock, with which every flow writer
// serializes.
type Shadow struct {
	flows  map[string]*openflow.Flow     // by flowKey
	at     map[tablePrio]map[string]bool // flow keys at table, priority
	resub  map[uint8]int                 // flows resubmitting to table
	traces map[uint8]*shadowTrace        // by tag
}

type tablePrio struct {
	table uint8
	prio  int
}

type shadowTrace struct {
	cookie uint64
	mode   Mode
	copies map[string][]*openflow.Flow // by the copied flow's key
}

// NewShadow makes the Shadow of the flows a switch dumped.
func NewShadow(base []*openflow.Flow) (*Shadow, error) {
	s := &Shadow{flows: map[string]*openflow.Flow{}, at: map[tablePrio]map[string]bool{},
		resub: map[uint8]int{}, traces: map[uint8]*shadowTrace{}}
	for _, f := range base {
		if isTraceFlow(f) {
			continue
		}
		if _, err := s.put(f); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Rebase replaces the shadowed flows with a fresh dump, keeping the
// traces' copies (a new trace starts from the switch's flows as they are).
func (s *Shadow) Rebase(base []*openflow.Flow) error {
	n, err := NewShadow(base)
	if err != nil {
		return err
	}
	s.flows, s.at, s.resub = n.flows, n.at, n.resub
	return nil
}

func (s *Shadow) occupied(table uint8, prio int) bool { return len(s.at[tablePrio{table, prio}]) > 0 }
func (s *Shadow) resubmitted(table uint8) bool        { return s.resub[table] > 0 }

// Trace makes (and records) trace tag's copies of the shadowed flows, in
// the order of their keys; skipped are the flows that get none because a
// neighbour could overlap them (see Copies).
func (s *Shadow) Trace(tag uint8, cookie uint64, mode Mode) (copies, skipped []*openflow.Flow, err error) {
	if tag == 0 || tag > MaxTag {
		return nil, nil, fmt.Errorf("tag %d out of range 1-%d", tag, MaxTag)
	}
	tr := &shadowTrace{cookie: cookie, mode: mode, copies: map[string][]*openflow.Flow{}}
	for _, k := range slices.Sorted(maps.Keys(s.flows)) {
		f := s.flows[k]
		c, skip, err := copiesOf(f, tag, cookie, mode, s)
		if err != nil {
			return nil, nil, err
		}
		if skip {
			skipped = append(skipped, f)
		}
		if len(c) > 0 {
			tr.copies[k] = c
			copies = append(copies, c...)
		}
	}
	s.traces[tag] = tr
	return copies, skipped, nil
}

// Forget drops trace tag's copies from the Shadow (the caller deletes
// them from the switch); it returns how many traces are left.
func (s *Shadow) Forget(tag uint8) int {
	delete(s.traces, tag)
	return len(s.traces)
}

// Traces is how many traces the Shadow keeps in step.
func (s *Shadow) Traces() int { return len(s.traces) }

// Follow takes msgs, which the switch just committed (in order, in one
// bundle), into the Shadow and returns what keeps every trace's copies in
// step: strict deletes of the copies that went, then adds of the copies
// that came or changed. Messages other than flow-mods, and flow-mods of the
// traces' own flows, change nothing. After ErrCannotFollow (or any error)
// the Shadow is no longer the switch's: the caller drops it.
func (s *Shadow) Follow(msgs []openflow.Message) ([]openflow.Message, error) {
	changed := map[string]bool{}
	touched := map[tablePrio]bool{}
	note := func(k string, tp tablePrio, took bool) {
		changed[k] = true
		if took {
			touched[tp] = true
		}
	}
	for _, m := range msgs {
		fm, ok := m.(*openflow.FlowMod)
		if !ok {
			continue
		}
		f := fm.Flow
		if fm.Command == openflow.FlowDelete && fm.CookieMask&categoryMask != categoryMask {
			return nil, fmt.Errorf("%w: delete by cookie %#x/%#x may hit the traces' flows", ErrCannotFollow, f.CookieValue(), fm.CookieMask)
		}
		if isTraceFlow(f) {
			continue
		}
		switch fm.Command {
		case openflow.FlowAdd:
			took, err := s.put(f)
			if err != nil {
				return nil, err
			}
			note(flowKey(f), tablePrio{f.TableID(), int(f.Priority())}, took)
		case openflow.FlowModifyStrict:
			if s.flows[flowKey(f)] == nil {
				continue // modify adds nothing
			}
			if _, err := s.put(f); err != nil {
				return nil, err
			}
			changed[flowKey(f)] = true
		case openflow.FlowDeleteStrict:
			k := flowKey(f)
			freed, err := s.remove(k)
			if err != nil {
				return nil, err
			}
			note(k, tablePrio{f.TableID(), int(f.Priority())}, freed)
		case openflow.FlowDelete:
			if len(f.MatchBytes()) != 0 {
				return nil, fmt.Errorf("%w: delete with a match", ErrCannotFollow)
			}
			for _, k := range slices.Sorted(maps.Keys(s.flows)) {
				x := s.flows[k]
				if (f.TableID() == openflow.TableAll || x.TableID() == f.TableID()) && x.CookieValue()&fm.CookieMask == f.CookieValue()&fm.CookieMask {
					freed, err := s.remove(k)
					if err != nil {
						return nil, err
					}
					note(k, tablePrio{x.TableID(), int(x.Priority())}, freed)
				}
			}
		default:
			return nil, fmt.Errorf("%w: flow-mod command %d", ErrCannotFollow, fm.Command)
		}
	}
	// A flow that came or went at p changes whether the flows at p-1 (and,
	// for a live output copy, p-2) get copies.
	for tp := range touched {
		for d := 1; d <= 2; d++ {
			for k := range s.at[tablePrio{tp.table, tp.prio - d}] {
				changed[k] = true
			}
		}
	}
	var dels, adds []openflow.Message
	keys := slices.Sorted(maps.Keys(changed))
	for _, tag := range slices.Sorted(maps.Keys(s.traces)) {
		tr := s.traces[tag]
		for _, k := range keys {
			var want []*openflow.Flow
			if f := s.flows[k]; f != nil {
				var err error
				if want, _, err = copiesOf(f, tag, tr.cookie, tr.mode, s); err != nil {
					return nil, err
				}
			}
			d, a := diffCopies(tr.copies[k], want)
			dels, adds = append(dels, d...), append(adds, a...)
			if len(want) > 0 {
				tr.copies[k] = want
			} else {
				delete(tr.copies, k)
			}
		}
	}
	return append(dels, adds...), nil
}

// diffCopies is the strict deletes of the copies in have that want has no
// more and the adds of those of want that are new or changed. A copy made
// from a dumped flow and one made from the flow the agent sent name the
// same flow with their match fields in another order: they are compared
// by flowKey and the text of their actions.
func diffCopies(have, want []*openflow.Flow) (dels, adds []openflow.Message) {
	wanted := map[string]string{}
	for _, c := range want {
		wanted[flowKey(c)] = c.ActionsString()
	}
	had := map[string]string{}
	for _, h := range have {
		k := flowKey(h)
		had[k] = h.ActionsString()
		if _, ok := wanted[k]; !ok {
			dels = append(dels, openflow.DeleteFlowStrict(h))
		}
	}
	for _, c := range want {
		if a, ok := had[flowKey(c)]; !ok || a != c.ActionsString() {
			adds = append(adds, openflow.AddFlow(c))
		}
	}
	return dels, adds
}

// put adds or replaces f; took reports that its table and priority had no
// flow before. A table that starts being resubmitted to cannot be followed.
func (s *Shadow) put(f *openflow.Flow) (took bool, err error) {
	k := flowKey(f)
	if err := s.resubmits(f, 1); err != nil {
		return false, err
	}
	if old := s.flows[k]; old != nil {
		if err := s.resubmits(old, -1); err != nil {
			return false, err
		}
	}
	s.flows[k] = f
	tp := tablePrio{f.TableID(), int(f.Priority())}
	if s.at[tp] == nil {
		s.at[tp] = map[string]bool{}
	}
	took = len(s.at[tp]) == 0
	s.at[tp][k] = true
	return took, nil
}

// remove deletes the flow with key k, if shadowed; freed reports that its
// table and priority have no flow left.
func (s *Shadow) remove(k string) (freed bool, err error) {
	f := s.flows[k]
	if f == nil {
		return false, nil
	}
	if err := s.resubmits(f, -1); err != nil {
		return false, err
	}
	delete(s.flows, k)
	tp := tablePrio{f.TableID(), int(f.Priority())}
	delete(s.at[tp], k)
	if len(s.at[tp]) == 0 {
		delete(s.at, tp)
		return true, nil
	}
	return false, nil
}

// resubmits counts f's resubmits (d = 1 or -1). Before the first trace
// (NewShadow) any count goes; after, a table whose count leaves or
// reaches 0 changes which tables' flows get copies at all.
func (s *Shadow) resubmits(f *openflow.Flow, d int) error {
	tables, err := resubmits(f)
	if err != nil {
		return err
	}
	for _, t := range tables {
		before := s.resub[t]
		s.resub[t] += d
		if len(s.traces) > 0 && (before == 0) != (s.resub[t] == 0) {
			return fmt.Errorf("%w: table %d resubmitted to by %d flows, was %d", ErrCannotFollow, t, s.resub[t], before)
		}
		if s.resub[t] == 0 {
			delete(s.resub, t)
		}
	}
	return nil
}

// categoryMask selects a cookie's category, in any round.
const categoryMask = pipeline.CategoryMask &^ pipeline.RoundMask

func isTraceFlow(f *openflow.Flow) bool {
	return pipeline.Cookie(f.CookieValue()).Category() == pipeline.CategoryTraceflow
}

// flowKey names a flow as OpenFlow's strict commands do (table, priority,
// match) with its match as text, fields sorted: a switch hands a match
// back with its fields in its own order and registers merged (reg0 and
// reg1 as xreg0), which the text folds back.
func flowKey(f *openflow.Flow) string {
	fields := strings.Split(f.MatchString(), ",")
	slices.Sort(fields)
	return strconv.Itoa(int(f.TableID())) + "/" + strconv.Itoa(int(f.Priority())) + "/" + strings.Join(fields, ",")
}
