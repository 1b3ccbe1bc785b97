package openflow

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// teeConn copies everything read from the switch.
type teeConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func writeSeed(t *testing.T, target string, args ...any) {
	t.Helper()
	var sb bytes.Buffer
	sb.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch a := a.(type) {
		case []byte:
			sb.WriteString("[]byte(" + strconv.Quote(string(a)) + ")\n")
		case uint16:
			fmt.Fprintf(&sb, "uint16(%d)\n", a)
		}
	}
	sum := sha256.Sum256(sb.Bytes())
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("ovs-%x", sum[:8])), sb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRecordFuzzSeeds (with -update) drives a real ovs-vswitchd through
// everything the library decodes and stores what the switch sent as fuzz
// seeds. Without -update it only checks that the stored corpus exists.
func TestRecordFuzzSeeds(t *testing.T) {
	if !*updateGolden {
		for _, target := range []string{"FuzzUnmarshal", "FuzzPacketIn2", "FuzzErrorMsg", "FuzzMultipartReply", "FuzzInstructions"} {
			if ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", target)); err != nil || len(ents) == 0 {
				t.Errorf("no seed corpus for %s (run go test -update as root with OVS installed): %v", target, err)
			}
		}
		return
	}
	var mu sync.Mutex
	var rec bytes.Buffer
	pins := make(chan *PacketIn, 4)
	cfg := Config{
		Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := DefaultDialer(ctx, addr)
			if err != nil {
				return nil, err
			}
			return teeConn{Conn: c, mu: &mu, buf: &rec}, nil
		},
		PacketIn: func(p *PacketIn) { pins <- p },
	}
	d, c, ctx := testBridge(t, cfg)
	ofctl(t, ctx, d, "add-tlv-map", "br0", "{class=0xffff,type=0,len=4}->tun_metadata0,{class=0xffff,type=1,len=4}->tun_metadata1")
	var gm []Message
	for _, g := range catalogGroups() {
		gm = append(gm, AddGroup(g))
	}
	if err := c.Bundle(ctx, gm...); err != nil {
		t.Fatal(err)
	}
	for _, m := range catalogMeters() {
		if err := c.Apply(ctx, AddMeter(m)); err != nil {
			t.Fatal(err)
		}
	}
	var flows []*Flow
	for _, cf := range catalog() {
		flows = append(flows, cf.flow)
	}
	if err := c.AddFlows(ctx, flows...); err != nil {
		t.Fatal(err)
	}
	// Errors: at add time and at commit time.
	c.AddFlows(ctx, NewFlow(3, 1).Match(NewMatch().TCPDst(80)))
	c.AddFlows(ctx, NewFlow(3, 1).Actions(NewActions().Group(99)))
	c.Apply(ctx, AddMeter(&MeterEntry{ID: 2, Flags: MeterKbps}))
	// Packet-in2 with userdata, registers and a continuation.
	if err := c.AddFlows(ctx, NewFlow(20, 1).Match(NewMatch().UDP()).Actions(NewActions().SetReg(0, 5).
		Controller(Controller{Reason: ReasonAction, Userdata: []byte("seed"), Pause: true}))); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, NewPacketOut(PortController, udpFrame([]byte("x")), NewActions().Resubmit(PortInPort, 20))); err != nil {
		t.Fatal(err)
	}
	<-pins
	c.DumpFlows(ctx, TableAll, 0, 0)
	c.Aggregate(ctx, TableAll, 0, 0)
	c.TableStats(ctx)
	c.PortStats(ctx, PortAny)
	c.PortDesc(ctx, PortAny)
	c.GroupStats(ctx, GroupAll)
	c.GroupDesc(ctx, GroupAll)
	c.MeterStats(ctx, MeterAll)
	c.MeterDesc(ctx, MeterAll)
	c.Close()
	<-c.Done()

	mu.Lock()
	defer mu.Unlock()
	br := bufio.NewReader(&rec)
	n := 0
	for {
		raw, err := readMessage(br)
		if err != nil {
			break
		}
		n++
		writeSeed(t, "FuzzUnmarshal", raw)
		_, m, err := Unmarshal(raw)
		if err != nil {
			t.Errorf("recorded message does not decode: %v", err)
			continue
		}
		switch m := m.(type) {
		case *PacketIn:
			writeSeed(t, "FuzzPacketIn2", raw[headerLen+8:])
		case *ErrorMsg:
			writeSeed(t, "FuzzErrorMsg", raw[headerLen:])
		case *MultipartReply:
			writeSeed(t, "FuzzMultipartReply", m.Type, m.Body)
			if m.Type == MultipartFlowDesc {
				fs, _ := ParseFlowStats(m.Body)
				for _, f := range fs {
					writeSeed(t, "FuzzInstructions", f.Flow.InstructionBytes())
				}
			}
		}
	}
	for name, raw := range readGolden(t, goldenFlowMods) {
		writeSeed(t, "FuzzUnmarshal", raw)
		_ = name
	}
	t.Logf("recorded %d messages from ovs-vswitchd", n)
}
