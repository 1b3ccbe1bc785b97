package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform/platformtest"
)

// fakeDB is platformtest's FakeOVSDB plus ListPorts, which it answers from
// the names of the ports it saw created.
type fakeDB struct {
	*platformtest.FakeOVSDB
	mu    sync.Mutex
	names map[string]bool
}

func newFakeDB() *fakeDB {
	return &fakeDB{FakeOVSDB: platformtest.NewFakeOVSDB(), names: map[string]bool{}}
}

func (d *fakeDB) EnsurePort(ctx context.Context, bridge string, p ovsdb.PortConfig) error {
	if err := d.FakeOVSDB.EnsurePort(ctx, bridge, p); err != nil {
		return err
	}
	d.mu.Lock()
	d.names[p.Name] = true
	d.mu.Unlock()
	return nil
}

func (d *fakeDB) ListPorts(ctx context.Context, match map[string]string) ([]ovsdb.PortInfo, error) {
	d.mu.Lock()
	names := slices.Sorted(maps.Keys(d.names))
	d.mu.Unlock()
	var out []ovsdb.PortInfo
	for _, n := range names {
		p, err := d.GetPort(ctx, n)
		if errors.Is(err, ovsdb.ErrPortNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ok := true
		for k, v := range match {
			ok = ok && p.ExternalIDs[k] == v
		}
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// podPorts lists the pod ports' names.
func (d *fakeDB) podPorts() []string {
	ps, _ := d.ListPorts(context.Background(), map[string]string{extType: extTypePod})
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return names
}

// fakeSwitch is an in-memory OpenFlow switch: flows by table, priority and
// match, with add (replace), strict delete, delete and dump by cookie. It
// calls onConnect when it "connects", and again on reconnect (a restarted
// ovs-vswitchd, which has no flows).
type fakeSwitch struct {
	onConnect func(context.Context, FlowWriter) error

	mu        sync.Mutex
	flows     map[string]*openflow.Flow
	groups    map[uint32]*openflow.GroupEntry
	meters    map[uint32]*openflow.MeterEntry
	packetOut []*openflow.PacketOut
	resumed   []resumed // NXT_RESUMEs, with the flows at that moment
	connected chan struct{}
	failNext  error
	bundles   int
	dumps     int      // DumpFlows calls
	last      []string // the flow-mods of the last Bundle
}

func newFakeSwitch() *fakeSwitch {
	return &fakeSwitch{flows: map[string]*openflow.Flow{}, groups: map[uint32]*openflow.GroupEntry{},
		meters: map[uint32]*openflow.MeterEntry{}, connected: make(chan struct{})}
}

// factory makes the switch the agent's NewSwitch.
func (s *fakeSwitch) factory(_ string, onConnect func(context.Context, FlowWriter) error, packetIn func(*openflow.PacketIn)) Switch {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onConnect = onConnect
	s.connected = make(chan struct{})
	return s
}

func (s *fakeSwitch) Run(ctx context.Context) error {
	if err := s.onConnect(ctx, s); err != nil {
		return err
	}
	s.mu.Lock()
	close(s.connected)
	s.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (s *fakeSwitch) Do(ctx context.Context, fn func(FlowWriter) error) error {
	s.mu.Lock()
	ch := s.connected
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	return fn(s)
}

func (s *fakeSwitch) DoNow(ctx context.Context, fn func(FlowWriter) error) error {
	s.mu.Lock()
	ch := s.connected
	s.mu.Unlock()
	select {
	case <-ch:
	default:
		return errNoSwitch
	}
	return fn(s)
}

// disconnect makes the switch unreachable, as ovs-vswitchd being down
// does: Do waits, DoNow fails.
func (s *fakeSwitch) disconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = make(chan struct{})
}

// reconnect brings a restarted ovs-vswitchd back: no flows, onConnect,
// then the connection is handed out again.
func (s *fakeSwitch) reconnect(ctx context.Context) error {
	if err := s.restart(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.connected)
	return nil
}

// stats returns the bundle and dump counts and the last bundle.
func (s *fakeSwitch) stats() (bundles, dumps int, last []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundles, s.dumps, s.last
}

// restart drops every flow and runs onConnect, as a new connection to a
// restarted ovs-vswitchd does.
func (s *fakeSwitch) restart(ctx context.Context) error {
	s.mu.Lock()
	s.flows = map[string]*openflow.Flow{}
	s.groups = map[uint32]*openflow.GroupEntry{}
	s.meters = map[uint32]*openflow.MeterEntry{}
	s.mu.Unlock()
	return s.onConnect(ctx, s)
}

// Bundle applies flow-mods (add, strict delete, delete by cookie) and
// group-mods (add, modify, add-or-modify, insert buckets, delete) in
// order, all or nothing; a flow that names a missing group fails it, as
// OVS does.
func (s *fakeSwitch) Bundle(_ context.Context, msgs ...openflow.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failNext; err != nil {
		s.failNext = nil
		return err
	}
	flows, groups := maps.Clone(s.flows), maps.Clone(s.groups)
	s.last = nil
	for i, m := range msgs {
		switch m := openflow.Decoded(m).(type) { // as the switch reads an Encoded message
		case *openflow.FlowMod:
			s.last = append(s.last, m.String())
			f := m.Flow
			switch m.Command {
			case openflow.FlowAdd:
				for _, g := range groupsOf(f) {
					if groups[g] == nil {
						return fmt.Errorf("fake switch: message %d: %s uses missing group %d", i, f, g)
					}
				}
				flows[f.Key()] = f
			case openflow.FlowDeleteStrict:
				delete(flows, f.Key())
			case openflow.FlowDelete:
				for k, x := range flows {
					if (f.TableID() == openflow.TableAll || x.TableID() == f.TableID()) &&
						x.CookieValue()&m.CookieMask == f.CookieValue()&m.CookieMask {
						delete(flows, k)
					}
				}
			default:
				return fmt.Errorf("fake switch: flow command %d", m.Command)
			}
		case *openflow.GroupMod:
			g := m.Group
			switch m.Command {
			case openflow.GroupAdd, openflow.GroupModify, openflow.GroupAddOrModify:
				if m.Command == openflow.GroupAdd && groups[g.ID] != nil || m.Command == openflow.GroupModify && groups[g.ID] == nil {
					return fmt.Errorf("fake switch: message %d: group %d command %d", i, g.ID, m.Command)
				}
				c := *g
				groups[g.ID] = &c
			case openflow.GroupInsertBuckets:
				old := groups[g.ID]
				if old == nil {
					return fmt.Errorf("fake switch: insert into missing group %d", g.ID)
				}
				c := *old
				c.Buckets = append(slices.Clone(old.Buckets), g.Buckets...)
				groups[g.ID] = &c
			case openflow.GroupDelete:
				for id := range groups {
					if g.ID == openflow.GroupAll || id == g.ID {
						delete(groups, id)
						for k, f := range flows { // OVS deletes the flows that use a deleted group
							if slices.Contains(groupsOf(f), id) {
								delete(flows, k)
							}
						}
					}
				}
			default:
				return fmt.Errorf("fake switch: group command %d", m.Command)
			}
		default:
			return fmt.Errorf("fake switch: %T in a bundle", m)
		}
	}
	s.bundles++
	s.flows, s.groups = flows, groups
	return nil
}

// groupsOf lists the groups a flow's actions name.
func groupsOf(f *openflow.Flow) []uint32 {
	acts, err := openflow.DecodeInstructions(f.InstructionBytes())
	if err != nil {
		return nil
	}
	var out []uint32
	for _, a := range acts {
		if g, ok := a.(openflow.Group); ok {
			out = append(out, uint32(g))
		}
	}
	return out
}

// Apply takes meter-mods and packet-outs.
func (s *fakeSwitch) Apply(_ context.Context, msgs ...openflow.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		switch m := openflow.Decoded(m).(type) {
		case *openflow.MeterMod:
			switch m.Command {
			case openflow.MeterAdd:
				if s.meters[m.Meter.ID] != nil {
					return openflow.ErrorCode(openflow.ErrTypeMeterModFailed, 1)
				}
				s.meters[m.Meter.ID] = m.Meter
			case openflow.MeterModify:
				if s.meters[m.Meter.ID] == nil {
					return openflow.ErrorCode(openflow.ErrTypeMeterModFailed, 2)
				}
				s.meters[m.Meter.ID] = m.Meter
			}
		case *openflow.PacketOut:
			s.packetOut = append(s.packetOut, m)
		case *openflow.Resume:
			s.resumed = append(s.resumed, resumed{pin: m.PacketIn, flows: len(s.flows), text: s.flowTextLocked()})
		default:
			return fmt.Errorf("fake switch: apply %T", m)
		}
	}
	return nil
}

func (s *fakeSwitch) BundleFlows(_ context.Context, cmd uint8, flows []*openflow.Flow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failNext; err != nil {
		s.failNext = nil
		return err
	}
	s.bundles++
	for _, f := range flows {
		switch cmd {
		case openflow.FlowAdd:
			s.flows[f.Key()] = f
		case openflow.FlowDeleteStrict:
			delete(s.flows, f.Key())
		default:
			return fmt.Errorf("fake switch: command %d", cmd)
		}
	}
	return nil
}

func (s *fakeSwitch) DeleteFlowsByCookie(_ context.Context, cookie, mask uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, f := range s.flows {
		if f.CookieValue()&mask == cookie&mask {
			delete(s.flows, k)
		}
	}
	return nil
}

func (s *fakeSwitch) DumpFlows(_ context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dumps++
	var out []openflow.FlowStats
	for _, k := range slices.Sorted(maps.Keys(s.flows)) {
		f := s.flows[k]
		if (table == allTables || f.TableID() == table) && f.CookieValue()&mask == cookie&mask {
			out = append(out, openflow.FlowStats{Flow: f})
		}
	}
	return out, nil
}

// count returns how many flows have the cookie category (and object ID when
// id != 0).
func (s *fakeSwitch) count(c pipeline.Category, id uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.flows {
		ck := pipeline.Cookie(f.CookieValue())
		if ck.Category() == c && (id == 0 || ck.ID() == id) {
			n++
		}
	}
	return n
}

// rounds lists the rounds of the flows present.
func (s *fakeSwitch) rounds() []pipeline.Round {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rs []pipeline.Round
	for _, f := range s.flows {
		if r := pipeline.Cookie(f.CookieValue()).Round(); !slices.Contains(rs, r) {
			rs = append(rs, r)
		}
	}
	slices.Sort(rs)
	return rs
}

// text renders the flows sorted, for error messages.
func (s *fakeSwitch) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, f := range s.flows {
		lines = append(lines, f.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
