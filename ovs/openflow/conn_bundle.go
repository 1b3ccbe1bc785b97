package openflow

import (
	"context"
	"fmt"
	"time"
)

// Bundle applies msgs atomically and in order in one OpenFlow bundle
// (OFPBF_ATOMIC|OFPBF_ORDERED): either all of them take effect or none. If
// any message is rejected, when added or at commit, the bundle is discarded
// and the returned *Error names the failing message(s) in Failed. A message
// longer than MaxBundledLen (a flow-mod longer than MaxFlowModLen)
// discards the bundle too, with an error wrapping ErrTooLarge.
func (c *Conn) Bundle(ctx context.Context, msgs ...Message) (err error) {
	defer c.observe("bundle", len(msgs), time.Now(), &err)
	return c.bundle(ctx, len(msgs), func(b []byte, i int, id uint32, xid uint32) ([]byte, error) {
		return appendBundleAdd(b, id, BundleAtomic|BundleOrdered, msgs[i], xid)
	}, func(i int) string { return Describe(msgs[i]) })
}

// BundleFlows applies one flow-mod command (FlowAdd, FlowModifyStrict,
// FlowDeleteStrict) to every flow, atomically. It encodes straight into the
// socket buffer, so it is the fast path for installing many flows. A flow
// whose flow-mod is longer than MaxFlowModLen is refused before the bundle
// is opened, with an error wrapping ErrTooLarge.
func (c *Conn) BundleFlows(ctx context.Context, command uint8, flows []*Flow) (err error) {
	defer c.observe(commandOp(command), len(flows), time.Now(), &err)
	fm := FlowMod{Command: command, OutPort: PortAny, OutGroup: GroupAny, BufferID: NoBuffer}
	for i, f := range flows {
		if n, max := f.flowModLen(), maxLen(&fm, true); n > max {
			fm.Flow = f
			return fmt.Errorf("flow %d of %d: %w", i+1, len(flows), tooLarge(&fm, n, max))
		}
	}
	return c.bundle(ctx, len(flows), func(b []byte, i int, id uint32, xid uint32) ([]byte, error) {
		fm.Flow = flows[i]
		return appendBundleAdd(b, id, BundleAtomic|BundleOrdered, &fm, xid)
	}, func(i int) string {
		return Describe(&FlowMod{Command: command, Flow: flows[i]})
	})
}

type bundleEncoder func(b []byte, i int, bundleID, xid uint32) ([]byte, error)

func (c *Conn) bundle(ctx context.Context, n int, enc bundleEncoder, describe func(int) string) error {
	id := c.bundleID.Add(1)
	const flags = BundleAtomic | BundleOrdered
	if err := c.bundleControl(ctx, id, BundleOpenRequest, flags); err != nil {
		return fmt.Errorf("open bundle: %w", err)
	}
	s := c.openSpan(n)
	defer c.closeSpan(s)
	c.wmu.Lock()
	buf := make([]byte, 0, 128<<10)
	var err, encErr error
	for i := 0; i < n && err == nil; i++ {
		if buf, encErr = enc(buf, i, id, s.lo+uint32(i)); encErr != nil {
			encErr = fmt.Errorf("message %d of %d: %w", i+1, n, encErr)
			break
		}
		if len(buf) >= 96<<10 {
			err = c.writeNoFlush(buf)
			buf = buf[:0]
		}
	}
	if err == nil {
		err = c.writeLocked(buf)
	}
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	if encErr != nil {
		// What was sent of the bundle is complete messages; none takes
		// effect.
		if derr := c.bundleControl(ctx, id, BundleDiscardRequest, flags); derr != nil {
			return fmt.Errorf("%w (discard: %w)", encErr, derr)
		}
		return encErr
	}
	// A barrier flushes add-time errors (bad encodings) before we decide to
	// commit: a bundle whose adds failed would otherwise commit the rest.
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	if c.spanHasErrors(s) {
		derr := c.bundleControl(ctx, id, BundleDiscardRequest, flags)
		err := c.bundleSpanError(s, describe, nil)
		if derr != nil {
			return fmt.Errorf("%w (discard: %w)", err, derr)
		}
		return err
	}
	_, cerr := c.Request(ctx, &BundleControl{BundleID: id, Type: BundleCommitRequest, Flags: flags})
	if cerr != nil {
		if e, ok := cerr.(*Error); ok {
			return c.bundleSpanError(s, describe, e.Msg)
		}
		return fmt.Errorf("commit bundle: %w", cerr)
	}
	return nil
}

func (c *Conn) bundleControl(ctx context.Context, id uint32, typ, flags uint16) error {
	m, err := c.Request(ctx, &BundleControl{BundleID: id, Type: typ, Flags: flags})
	if err != nil {
		return err
	}
	if r, ok := m.(*BundleControl); !ok || r.Type != typ+1 {
		return fmt.Errorf("unexpected reply %T to bundle control %d", m, typ)
	}
	return nil
}

func (c *Conn) spanHasErrors(s *span) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(s.errs) > 0
}

func (c *Conn) bundleSpanError(s *span, describe func(int) string, top *ErrorMsg) error {
	c.mu.Lock()
	errs, xids := append([]*ErrorMsg(nil), s.errs...), append([]uint32(nil), s.xids...)
	c.mu.Unlock()
	var failed []*Error
	for i, e := range errs {
		failed = append(failed, &Error{Msg: e, Request: describe(int(xids[i] - s.lo))})
	}
	if top == nil {
		if len(failed) == 0 {
			return nil
		}
		top = &ErrorMsg{Type: ErrTypeBundleFailed, Code: errCodeBundleMsgFailed}
		return &Error{Msg: top, Request: "bundle add (discarded)", Failed: failed}
	}
	return &Error{Msg: top, Request: "bundle commit", Failed: failed}
}

// AddFlows installs flows atomically in one bundle.
func (c *Conn) AddFlows(ctx context.Context, flows ...*Flow) error {
	return c.BundleFlows(ctx, FlowAdd, flows)
}

// DeleteFlowsByCookie deletes, in every table, the flows whose cookie
// equals cookie under mask, and waits for the switch to finish.
func (c *Conn) DeleteFlowsByCookie(ctx context.Context, cookie, mask uint64) (err error) {
	defer c.observe("delete_cookie", 1, time.Now(), &err)
	return c.Apply(ctx, DeleteFlows(TableAll, nil, cookie, mask))
}

// multipart runs a multipart request and returns the joined reply bodies.
func (c *Conn) multipart(ctx context.Context, req *MultipartRequest) ([]byte, error) {
	m, err := c.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	r, ok := m.(*MultipartReply)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T to multipart request %d", m, req.Type)
	}
	return r.Body, nil
}

// DumpFlows returns the flows (with counters) in table (TableAll: all) whose
// cookie matches under cookieMask.
func (c *Conn) DumpFlows(ctx context.Context, table uint8, cookie, cookieMask uint64) ([]FlowStats, error) {
	b, err := c.multipart(ctx, FlowStatsRequest(table, cookie, cookieMask, nil))
	if err != nil {
		return nil, err
	}
	return ParseFlowStats(b)
}

// Aggregate returns aggregate counters over the same filter as DumpFlows.
func (c *Conn) Aggregate(ctx context.Context, table uint8, cookie, cookieMask uint64) (Stats, error) {
	b, err := c.multipart(ctx, AggregateRequest(table, cookie, cookieMask, nil))
	if err != nil {
		return Stats{}, err
	}
	return ParseAggregate(b)
}

// TableStats returns per-table counters.
func (c *Conn) TableStats(ctx context.Context) ([]TableStats, error) {
	b, err := c.multipart(ctx, TableStatsRequest())
	if err != nil {
		return nil, err
	}
	return ParseTableStats(b)
}

// PortStats returns counters of port (PortAny: all).
func (c *Conn) PortStats(ctx context.Context, port uint32) ([]PortStats, error) {
	b, err := c.multipart(ctx, PortStatsRequest(port))
	if err != nil {
		return nil, err
	}
	return ParsePortStats(b)
}

// PortDesc returns the description of port (PortAny: all).
func (c *Conn) PortDesc(ctx context.Context, port uint32) ([]PortDesc, error) {
	b, err := c.multipart(ctx, PortDescRequest(port))
	if err != nil {
		return nil, err
	}
	return ParsePortDesc(b)
}

// GroupStats returns group counters (GroupAll: all groups).
func (c *Conn) GroupStats(ctx context.Context, group uint32) ([]GroupStats, error) {
	b, err := c.multipart(ctx, GroupStatsRequest(group))
	if err != nil {
		return nil, err
	}
	return ParseGroupStats(b)
}

// GroupDesc returns group definitions (GroupAll: all groups).
func (c *Conn) GroupDesc(ctx context.Context, group uint32) ([]*GroupEntry, error) {
	b, err := c.multipart(ctx, GroupDescRequest(group))
	if err != nil {
		return nil, err
	}
	return ParseGroupDesc(b)
}

// MeterStats returns meter counters (MeterAll: all meters).
func (c *Conn) MeterStats(ctx context.Context, meter uint32) ([]MeterStats, error) {
	b, err := c.multipart(ctx, MeterStatsRequest(meter))
	if err != nil {
		return nil, err
	}
	return ParseMeterStats(b)
}

// MeterDesc returns meter configurations (MeterAll: all meters).
func (c *Conn) MeterDesc(ctx context.Context, meter uint32) ([]*MeterEntry, error) {
	b, err := c.multipart(ctx, MeterDescRequest(meter))
	if err != nil {
		return nil, err
	}
	return ParseMeterDesc(b)
}

// observe reports a finished flow operation to Config.Observe.
func (c *Conn) observe(op string, msgs int, start time.Time, err *error) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(op, msgs, time.Since(start), *err)
	}
}

// commandOp names a flow-mod command for Config.Observe.
func commandOp(command uint8) string {
	switch command {
	case FlowAdd:
		return "add"
	case FlowModify, FlowModifyStrict:
		return "modify"
	case FlowDelete, FlowDeleteStrict:
		return "delete"
	}
	return fmt.Sprintf("command%d", command)
}
