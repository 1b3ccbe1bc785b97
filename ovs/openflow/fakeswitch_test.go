package openflow

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// fakeSwitch is a minimal OpenFlow 1.5 switch on a unix socket: it sends
// hello, answers features, barrier and echo requests, and records every
// other message it receives. Tests use it to capture what ovs-ofctl sends
// and to drive the connection through failure cases.
type fakeSwitch struct {
	t    *testing.T
	path string
	ln   net.Listener

	mu       sync.Mutex
	got      [][]byte                          // raw messages received (besides hello/echo/barrier/features)
	noEcho   bool                              // do not answer echo requests
	hello    []byte                            // hello to send (default: OF1.5 bitmap)
	onMsg    func(raw []byte, w net.Conn) bool // custom handler; true: handled
	conns    []net.Conn
	received chan []byte
}

func newFakeSwitch(t *testing.T) *fakeSwitch {
	t.Helper()
	dir, err := os.MkdirTemp("", "ofsw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return newFakeSwitchOn(t, "unix", filepath.Join(dir, "sw.sock"))
}

// newFakeSwitchOn listens on network ("unix" or "tcp") and address.
func newFakeSwitchOn(t *testing.T, network, address string) *fakeSwitch {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeSwitch{t: t, ln: ln, path: address, received: make(chan []byte, 1024)}
	t.Cleanup(fs.close)
	go fs.accept()
	return fs
}

// set changes the switch's behaviour under its lock.
func (fs *fakeSwitch) set(f func()) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f()
}

func (fs *fakeSwitch) addr() string {
	if fs.ln.Addr().Network() == "tcp" {
		return "tcp:" + fs.ln.Addr().String()
	}
	return "unix:" + fs.path
}

func (fs *fakeSwitch) close() {
	fs.ln.Close()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, c := range fs.conns {
		c.Close()
	}
}

func (fs *fakeSwitch) accept() {
	for {
		c, err := fs.ln.Accept()
		if err != nil {
			return
		}
		fs.mu.Lock()
		fs.conns = append(fs.conns, c)
		fs.mu.Unlock()
		go fs.serve(c)
	}
}

func (fs *fakeSwitch) serve(c net.Conn) {
	defer c.Close()
	fs.mu.Lock()
	hello := fs.hello
	fs.mu.Unlock()
	if hello == nil {
		hello = marshal(&Hello{Versions: 1 << Version}, 1)
	}
	if _, err := c.Write(hello); err != nil {
		return
	}
	br := bufio.NewReader(c)
	for {
		raw, err := readMessage(br)
		if err != nil {
			return
		}
		h, _ := ParseHeader(raw)
		fs.mu.Lock()
		onMsg, noEcho := fs.onMsg, fs.noEcho
		fs.mu.Unlock()
		if onMsg != nil && onMsg(raw, c) {
			continue
		}
		switch h.Type {
		case TypeHello:
		case TypeEchoRequest:
			if !noEcho {
				c.Write(marshal(&EchoReply{Data: raw[headerLen:]}, h.Xid))
			}
		case TypeFeaturesRequest:
			c.Write(marshal(&FeaturesReply{DatapathID: 0x42, NTables: 254}, h.Xid))
		case TypeBarrierRequest:
			c.Write(marshal(&BarrierReply{}, h.Xid))
		case TypeMultipartRequest:
			// ovs-ofctl asks for table features (12) first; an empty
			// reply is enough for it.
			if len(raw) >= 10 && be.Uint16(raw[8:]) == 12 {
				entry := make([]byte, 64) // one bare ofp13_table_features for table 0
				entry[1] = 64
				c.Write(marshal(&MultipartReply{Type: 12, Body: entry}, h.Xid))
				continue
			}
			if len(raw) >= 10 && be.Uint16(raw[8:]) == MultipartPortDesc {
				c.Write(marshal(&MultipartReply{Type: MultipartPortDesc}, h.Xid))
				continue
			}
			fs.record(raw)
		default:
			fs.record(raw)
		}
	}
}

func (fs *fakeSwitch) record(raw []byte) {
	fs.mu.Lock()
	fs.got = append(fs.got, raw)
	fs.mu.Unlock()
	select {
	case fs.received <- raw:
	default:
	}
}

func (fs *fakeSwitch) messages() [][]byte {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([][]byte(nil), fs.got...)
}
