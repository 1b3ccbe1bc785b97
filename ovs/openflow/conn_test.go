package openflow

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func fakeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialNegotiatesAndSetsUp(t *testing.T) {
	fs := newFakeSwitch(t)
	ctx := fakeCtx(t)
	c, err := Dial(ctx, fs.addr(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Features().DatapathID != 0x42 {
		t.Errorf("features = %+v", c.Features())
	}
	// Dial sent set_config and the packet-in format request before its barrier.
	var types []string
	for _, raw := range fs.messages() {
		_, m, err := Unmarshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, Describe(m))
		if e, ok := m.(*Experimenter); ok && (e.Subtype != nxtSetPacketInFormat || e.Data[3] != 2) {
			t.Errorf("experimenter message %+v, want NXT_SET_PACKET_IN_FORMAT nxt_packet_in2", e)
		}
	}
	if strings.Join(types, ",") != "set_config,experimenter" {
		t.Errorf("setup sent %v", types)
	}
}

func TestDialRejectsOldSwitch(t *testing.T) {
	fs := newFakeSwitch(t)
	fs.set(func() { fs.hello = marshal(&Hello{Versions: 1 << 4}, 1) })
	if _, err := Dial(fakeCtx(t), fs.addr(), Config{}); err == nil || !strings.Contains(err.Error(), "1.5") {
		t.Errorf("Dial to an OpenFlow 1.3 switch: %v", err)
	}
}

func TestDialTCP(t *testing.T) {
	fs := newFakeSwitchOn(t, "tcp", "127.0.0.1:0")
	ctx := fakeCtx(t)
	c, err := Dial(ctx, fs.addr(), Config{})
	if err != nil {
		t.Fatalf("dial %s: %v", fs.addr(), err)
	}
	defer c.Close()
	if err := c.Barrier(ctx); err != nil {
		t.Errorf("barrier over tcp: %v", err)
	}
}

func TestDialBadAddress(t *testing.T) {
	if _, err := Dial(fakeCtx(t), "ssl:1.2.3.4:6653", Config{}); err == nil {
		t.Error("Dial accepted an ssl: address")
	}
}

func TestAnswersSwitchEcho(t *testing.T) {
	fs := newFakeSwitch(t)
	ctx := fakeCtx(t)
	c, err := Dial(ctx, fs.addr(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	replies := make(chan []byte, 1)
	var conn net.Conn
	fs.set(func() {
		fs.onMsg = func(raw []byte, w net.Conn) bool {
			if raw[1] == TypeEchoReply {
				replies <- raw
				return true
			}
			return false
		}
		conn = fs.conns[0]
	})
	if _, err := conn.Write(marshal(&EchoRequest{Data: []byte("are you there")}, 777)); err != nil {
		t.Fatal(err)
	}
	select {
	case raw := <-replies:
		h, m, _ := Unmarshal(raw)
		if h.Xid != 777 || string(m.(*EchoReply).Data) != "are you there" {
			t.Errorf("echo reply xid=%d %+v", h.Xid, m)
		}
	case <-ctx.Done():
		t.Fatal("no echo reply")
	}
}

func TestEchoTimeoutKillsConnection(t *testing.T) {
	fs := newFakeSwitch(t)
	fs.set(func() { fs.noEcho = true })
	ctx := fakeCtx(t)
	c, err := Dial(ctx, fs.addr(), Config{EchoInterval: 20 * time.Millisecond, EchoMisses: 2})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("connection to a switch that ignores echoes stayed up")
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "echo") {
		t.Errorf("Err() = %v", err)
	}
	if err := c.Barrier(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Barrier on dead connection = %v", err)
	}
}

func TestErrorsNameTheRequestAndMultipartJoins(t *testing.T) {
	fs := newFakeSwitch(t)
	ctx := fakeCtx(t)
	fs.set(func() { fs.onMsg = errorSwitchHandler })
	c, err := Dial(ctx, fs.addr(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := NewFlow(1, 65).Match(NewMatch().InPort(1)).Actions(NewActions().Output(2))
	bad := NewFlow(1, 66).Match(NewMatch().InPort(2)).Actions(NewActions().Output(3))
	err = c.Apply(ctx, AddFlow(good), AddFlow(bad), AddFlow(good))
	var oe *Error
	if !errors.As(err, &oe) || oe.Msg.Name() != "OFPBMC_BAD_PREREQ" || oe.Request != "flow_mod add table=1, priority=66,in_port=2 actions=output:3" {
		t.Errorf("Apply error = %#v", err)
	}
	ts, err := c.TableStats(ctx)
	if err != nil || len(ts) != 2 || ts[0].TableID != 1 || ts[1].TableID != 2 {
		t.Errorf("TableStats = %+v, %v", ts, err)
	}
}

// errorSwitchHandler rejects flows with priority 66 and answers multipart
// requests in two parts.
func errorSwitchHandler(raw []byte, w net.Conn) bool {
	h, m, err := Unmarshal(raw)
	if err != nil {
		return false
	}
	switch m := m.(type) {
	case *FlowMod:
		if m.Flow.Priority() == 66 {
			w.Write(marshal(&ErrorMsg{Type: ErrTypeBadMatch, Code: 9, Data: raw[:min(64, len(raw))]}, h.Xid))
		}
		return true
	case *MultipartRequest:
		// Two parts: the connection must join them.
		t1 := make([]byte, 24)
		t1[0] = 1
		t2 := make([]byte, 24)
		t2[0] = 2
		w.Write(marshal(&MultipartReply{Type: m.Type, Flags: multipartReplyMore, Body: t1}, h.Xid))
		w.Write(marshal(&MultipartReply{Type: m.Type, Body: t2}, h.Xid))
		return true
	}
	return false
}

func TestClientRetriesUntilSwitchAppears(t *testing.T) {
	fs := newFakeSwitch(t)
	addr := fs.addr()
	fs.close() // nothing listens yet
	ctx := fakeCtx(t)
	connected := make(chan *Conn, 1)
	cl := NewClient(addr, Config{BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		OnConnect: func(ctx context.Context, c *Conn) error { connected <- c; return nil }})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Run(runCtx) }()
	// Bring the switch up on the same path.
	fs2 := &fakeSwitch{t: t, path: fs.path, received: make(chan []byte, 16)}
	var err error
	for fs2.ln == nil {
		if fs2.ln, err = net.Listen("unix", fs.path); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(fs2.close)
	go fs2.accept()
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatal("client never connected")
	}
	if _, err := cl.Conn(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}
