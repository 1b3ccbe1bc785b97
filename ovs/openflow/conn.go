package openflow

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a connection. The zero value works: default dialer,
// logs discarded, echo every 5s with 3 misses allowed.
type Config struct {
	Dialer Dialer
	Logger *slog.Logger
	// EchoInterval is how often an idle connection is probed with an echo
	// request; after EchoMisses unanswered probes the connection is dead.
	EchoInterval time.Duration
	EchoMisses   int
	// MissSendLen is set with OFPT_SET_CONFIG (default: whole packet).
	MissSendLen uint16
	// PacketIn receives NXT_PACKET_IN2 messages. It runs on the reader
	// goroutine: hand work off rather than block.
	PacketIn func(*PacketIn)
	// OnConnect runs on every new connection of a Client before it is
	// handed out, e.g. to replay the flow cache after ovs-vswitchd restarted.
	OnConnect func(ctx context.Context, c *Conn) error
	// Backoff bounds a Client's reconnect delay (defaults 100ms and 5s).
	BackoffMin, BackoffMax time.Duration
	// Observe, when set, is told of every flow operation when it ends:
	// op is add, modify or delete (BundleFlows), bundle (Bundle) or
	// delete_cookie (DeleteFlowsByCookie); msgs the messages it carried;
	// err its outcome. It runs on the caller's goroutine.
	Observe func(op string, msgs int, d time.Duration, err error)
}

func (c *Config) setDefaults() {
	if c.Dialer == nil {
		c.Dialer = DefaultDialer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.EchoInterval <= 0 {
		c.EchoInterval = 5 * time.Second
	}
	if c.EchoMisses <= 0 {
		c.EchoMisses = 3
	}
	if c.MissSendLen == 0 {
		c.MissSendLen = 0xffff
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 5 * time.Second
	}
}

// Conn is one OpenFlow 1.5 connection to a switch. It is safe for concurrent
// use. It dies when the peer goes away or stops answering echoes; Done is
// closed then and every call returns an error wrapping ErrClosed.
type Conn struct {
	cfg      Config
	nc       net.Conn
	features FeaturesReply

	wmu sync.Mutex
	bw  *bufio.Writer

	xid      atomic.Uint32
	bundleID atomic.Uint32
	lastRecv atomic.Int64

	mu      sync.Mutex
	pending map[uint32]*pending
	spans   []*span // xid ranges whose errors are collected (bundles, Apply)
	err     error
	done    chan struct{}
}

type pending struct {
	ch    chan result
	parts []byte // multipart bodies collected so far
	mtype uint16
}

type result struct {
	msg Message
	err error
}

// span collects errors for xids in [lo, hi).
type span struct {
	lo, hi uint32
	errs   []*ErrorMsg
	xids   []uint32
}

// Dial connects to addr, negotiates OpenFlow 1.5, reads the features, sets
// miss_send_len and the NXT_PACKET_IN2 format, and starts the reader and
// the echo keepalive.
func Dial(ctx context.Context, addr string, cfg Config) (*Conn, error) {
	cfg.setDefaults()
	nc, err := cfg.Dialer(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &Conn{cfg: cfg, nc: nc, bw: bufio.NewWriterSize(nc, 256<<10),
		pending: map[uint32]*pending{}, done: make(chan struct{})}
	if err := c.handshake(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("openflow handshake with %s: %w", addr, err)
	}
	c.lastRecv.Store(time.Now().UnixNano())
	go c.readLoop()
	go c.echoLoop()
	if err := c.setup(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("openflow setup with %s: %w", addr, err)
	}
	return c, nil
}

func (c *Conn) handshake(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
		defer c.nc.SetDeadline(time.Time{})
	}
	if err := c.writeRaw(&Hello{Versions: 1 << Version}, c.nextXid()); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	br := bufio.NewReader(c.nc)
	raw, err := readMessage(br)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	h, m, err := Unmarshal(raw)
	if err != nil {
		return err
	}
	hello, ok := m.(*Hello)
	if !ok {
		return fmt.Errorf("expected hello, got %s", TypeName(h.Type))
	}
	if hello.Versions != 0 && hello.Versions&(1<<Version) == 0 || hello.Versions == 0 && h.Version < Version {
		return fmt.Errorf("switch does not speak OpenFlow 1.5 (version 0x%02x, bitmap 0x%x)", h.Version, hello.Versions)
	}
	if err := c.writeRaw(&FeaturesRequest{}, c.nextXid()); err != nil {
		return fmt.Errorf("send features request: %w", err)
	}
	for {
		raw, err := readMessage(br)
		if err != nil {
			return fmt.Errorf("read features reply: %w", err)
		}
		_, m, err := Unmarshal(raw)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *FeaturesReply:
			c.features = *m
			if br.Buffered() > 0 {
				return errors.New("unexpected data after features reply")
			}
			return nil
		case *EchoRequest:
			if err := c.writeRaw(&EchoReply{Data: m.Data}, be.Uint32(raw[4:])); err != nil {
				return fmt.Errorf("answer echo: %w", err)
			}
		case *ErrorMsg:
			return &Error{Msg: m, Request: "features_request"}
		}
	}
}

// writeRaw writes one message straight to the socket (before the reader
// and the buffered writer run).
func (c *Conn) writeRaw(m Message, xid uint32) error {
	b, err := Marshal(m, xid)
	if err != nil {
		return err
	}
	_, err = c.nc.Write(b)
	return err
}

func (c *Conn) setup(ctx context.Context) error {
	if err := c.Send(&SetConfig{MissSendLen: c.cfg.MissSendLen}); err != nil {
		return err
	}
	if err := c.Send(SetPacketInFormat()); err != nil {
		return err
	}
	return c.Barrier(ctx)
}

// Features returns the switch's features reply (datapath id, tables).
func (c *Conn) Features() FeaturesReply { return c.features }

// Done is closed when the connection has died or was closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection died (nil while alive).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	return nil
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.err = err
	pend := c.pending
	c.pending = map[uint32]*pending{}
	close(c.done)
	c.mu.Unlock()
	c.nc.Close()
	for _, p := range pend {
		p.ch <- result{err: err}
	}
}

func (c *Conn) nextXid() uint32 { return c.xid.Add(1) }

func readMessage(r *bufio.Reader) ([]byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(be.Uint16(h[2:]))
	if n < headerLen {
		return nil, fmt.Errorf("bad message length %d", n)
	}
	buf := make([]byte, n)
	copy(buf, h[:])
	if _, err := io.ReadFull(r, buf[headerLen:]); err != nil {
		return nil, err
	}
	return buf, nil
}

func (c *Conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		raw, err := readMessage(br)
		if err != nil {
			c.fail(fmt.Errorf("read: %w", err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		h, m, err := Unmarshal(raw)
		if err != nil {
			c.cfg.Logger.Warn("openflow: undecodable message", "type", TypeName(h.Type), "xid", h.Xid, "err", err)
			c.deliverErr(h.Xid, err)
			continue
		}
		c.dispatch(h, m)
	}
}

func (c *Conn) dispatch(h Header, m Message) {
	switch m := m.(type) {
	case *EchoRequest:
		// Reply off the reader goroutine: a long bundle write may hold the
		// writer, and the reader must keep draining the switch meanwhile.
		go func() {
			if err := c.sendXid(&EchoReply{Data: m.Data}, h.Xid); err != nil {
				c.fail(err)
			}
		}()
		return
	case *EchoReply:
		return
	case *PacketIn:
		if c.cfg.PacketIn != nil {
			c.cfg.PacketIn(m)
		}
		return
	case *ErrorMsg:
		c.mu.Lock()
		for _, s := range c.spans {
			if h.Xid-s.lo < s.hi-s.lo {
				s.errs = append(s.errs, m)
				s.xids = append(s.xids, h.Xid)
				c.mu.Unlock()
				return
			}
		}
		p := c.pending[h.Xid]
		delete(c.pending, h.Xid)
		c.mu.Unlock()
		if p != nil {
			p.ch <- result{msg: m}
			return
		}
		c.cfg.Logger.Warn("openflow: unsolicited error", "xid", h.Xid, "error", m.Name())
		return
	case *MultipartReply:
		c.mu.Lock()
		p := c.pending[h.Xid]
		if p != nil {
			p.parts = append(p.parts, m.Body...)
			if m.More() {
				c.mu.Unlock()
				return
			}
			delete(c.pending, h.Xid)
		}
		c.mu.Unlock()
		if p != nil {
			p.ch <- result{msg: &MultipartReply{Type: m.Type, Body: p.parts}}
		}
		return
	}
	c.mu.Lock()
	p := c.pending[h.Xid]
	delete(c.pending, h.Xid)
	c.mu.Unlock()
	if p != nil {
		p.ch <- result{msg: m}
		return
	}
	c.cfg.Logger.Debug("openflow: unsolicited message", "type", TypeName(h.Type), "xid", h.Xid)
}

func (c *Conn) deliverErr(xid uint32, err error) {
	c.mu.Lock()
	p := c.pending[xid]
	delete(c.pending, xid)
	c.mu.Unlock()
	if p != nil {
		p.ch <- result{err: err}
	}
}

func (c *Conn) echoLoop() {
	t := time.NewTicker(c.cfg.EchoInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		idle := time.Since(time.Unix(0, c.lastRecv.Load()))
		if idle < c.cfg.EchoInterval {
			misses = 0
			continue
		}
		if misses >= c.cfg.EchoMisses {
			c.fail(fmt.Errorf("no echo reply after %d probes", misses))
			return
		}
		misses++
		if err := c.Send(&EchoRequest{}); err != nil {
			c.fail(err)
			return
		}
	}
}

// Send writes one message without waiting for anything. Errors the switch
// reports for it are logged; use Apply or Request to see them.
func (c *Conn) Send(m Message) error { return c.sendXid(m, c.nextXid()) }

// sendXid writes m with xid. A message that does not fit is refused
// before anything is written, and the connection stays up.
func (c *Conn) sendXid(m Message, xid uint32) error {
	b, err := Marshal(m, xid)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

func (c *Conn) writeLocked(b []byte) error {
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	if _, err := c.bw.Write(b); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return c.Err()
	}
	if err := c.bw.Flush(); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return c.Err()
	}
	return nil
}

func (c *Conn) register(xid uint32) *pending {
	p := &pending{ch: make(chan result, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		p.ch <- result{err: c.err}
		return p
	}
	c.pending[xid] = p
	c.mu.Unlock()
	return p
}

func (c *Conn) unregister(xid uint32) {
	c.mu.Lock()
	delete(c.pending, xid)
	c.mu.Unlock()
}

// Request sends m and waits for the reply with the same xid (multipart
// replies are joined into one *MultipartReply). An OFPT_ERROR reply is
// returned as *Error naming the request.
func (c *Conn) Request(ctx context.Context, m Message) (Message, error) {
	xid := c.nextXid()
	p := c.register(xid)
	if err := c.sendXid(m, xid); err != nil {
		c.unregister(xid)
		return nil, err
	}
	select {
	case r := <-p.ch:
		if r.err != nil {
			return nil, r.err
		}
		if e, ok := r.msg.(*ErrorMsg); ok {
			return nil, &Error{Msg: e, Request: Describe(m)}
		}
		return r.msg, nil
	case <-ctx.Done():
		c.unregister(xid)
		return nil, ctx.Err()
	}
}

// Barrier waits until the switch has processed everything sent before.
func (c *Conn) Barrier(ctx context.Context) error {
	_, err := c.Request(ctx, &BarrierRequest{})
	return err
}

// Describe names a message for errors: its type and, for flow, group and
// meter mods, the entry in ovs-ofctl syntax.
func Describe(m Message) string {
	switch m := m.(type) {
	case *FlowMod:
		return "flow_mod " + m.String()
	case *GroupMod:
		return fmt.Sprintf("group_mod command=%d %s", m.Command, m.Group)
	case *MeterMod:
		return fmt.Sprintf("meter_mod command=%d %s", m.Command, m.Meter)
	case *PacketOut:
		return "packet_out " + m.String()
	case *MultipartRequest:
		return fmt.Sprintf("multipart_request type=%d", m.Type)
	case *BundleControl:
		return fmt.Sprintf("bundle_control bundle_id=%d type=%d", m.BundleID, m.Type)
	case *Raw: // an Encoded message, or one of a type not decoded
		if d := Decoded(m); !isRaw(d) {
			return Describe(d)
		}
	}
	return TypeName(m.MsgType())
}

// isRaw reports whether m is a message this package did not decode.
func isRaw(m Message) bool {
	_, ok := m.(*Raw)
	return ok
}

// Apply sends msgs followed by a barrier and returns the errors the switch
// reported for any of them (each naming its message), joined. If any
// message does not fit in MaxMessageLen, none is sent and the error wraps
// ErrTooLarge.
func (c *Conn) Apply(ctx context.Context, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	s := c.openSpan(len(msgs))
	defer c.closeSpan(s)
	// Encoded whole before anything is written, so that a message that
	// does not fit leaves the switch untouched.
	buf := make([]byte, 0, 4<<10)
	for i, m := range msgs {
		var err error
		if buf, err = AppendMessage(buf, m, s.lo+uint32(i)); err != nil {
			return fmt.Errorf("message %d of %d: %w", i+1, len(msgs), err)
		}
	}
	c.wmu.Lock()
	err := c.writeLocked(buf)
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	return c.spanErrors(s, msgs, nil)
}

func (c *Conn) writeNoFlush(b []byte) error {
	if _, err := c.bw.Write(b); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return c.Err()
	}
	return nil
}

// openSpan reserves n consecutive xids whose errors are collected.
func (c *Conn) openSpan(n int) *span {
	hi := c.xid.Add(uint32(n)) + 1
	s := &span{lo: hi - uint32(n), hi: hi}
	c.mu.Lock()
	c.spans = append(c.spans, s)
	c.mu.Unlock()
	return s
}

func (c *Conn) closeSpan(s *span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.spans {
		if x == s {
			c.spans = append(c.spans[:i], c.spans[i+1:]...)
			return
		}
	}
}

// spanErrors turns collected errors into one error. top, if set, is the
// error of the operation as a whole (a failed bundle commit).
func (c *Conn) spanErrors(s *span, msgs []Message, top *ErrorMsg) error {
	c.mu.Lock()
	errs, xids := append([]*ErrorMsg(nil), s.errs...), append([]uint32(nil), s.xids...)
	c.mu.Unlock()
	if len(errs) == 0 && top == nil {
		return nil
	}
	var failed []*Error
	for i, e := range errs {
		idx := int(xids[i] - s.lo)
		failed = append(failed, &Error{Msg: e, Request: Describe(msgs[idx])})
	}
	if top == nil {
		if len(failed) == 1 {
			return failed[0]
		}
		all := make([]error, len(failed))
		for i, f := range failed {
			all[i] = f
		}
		return errors.Join(all...)
	}
	return &Error{Msg: top, Request: "bundle commit", Failed: failed}
}
