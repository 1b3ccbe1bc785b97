package ovsdb

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/internal/winpipe"
	"github.com/seine-cni/seine/ovs/internal/winpipe/pipetest"
)

// fakeOVSDB is a JSON-RPC server on a pipe that knows list_dbs and echo
// only. It serves no Open_vSwitch database, so a client gets as far as the
// database check of the handshake, which proves the transport.
type fakeOVSDB struct {
	methods chan string   // every method received
	closed  chan struct{} // one value per connection that ended
}

func newFakeOVSDB(t *testing.T, name string) *fakeOVSDB {
	f := &fakeOVSDB{methods: make(chan string, 100), closed: make(chan struct{}, 100)}
	ln := pipetest.Listen(t, name)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeOVSDB) serve(c net.Conn) {
	defer func() { f.closed <- struct{}{} }()
	defer c.Close()
	dec, enc := json.NewDecoder(c), json.NewEncoder(c)
	for {
		var req struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			ID     any             `json:"id"`
		}
		if dec.Decode(&req) != nil {
			return
		}
		f.methods <- req.Method
		reply := map[string]any{"id": req.ID, "error": nil}
		switch req.Method {
		case "list_dbs":
			reply["result"] = []string{"Seine_Test"}
		case "echo":
			reply["result"] = req.Params
		default:
			reply["result"], reply["error"] = nil, "unknown method"
		}
		if enc.Encode(reply) != nil {
			return
		}
	}
}

func uniquePipe(what string) string {
	return fmt.Sprintf(`\\.\pipe\seine-ovsdb-%s-%d-%d`, what, os.Getpid(), time.Now().UnixNano())
}

func TestParsePipeEndpoint(t *testing.T) {
	for in, want := range map[string]Endpoint{
		`npipe:\\.\pipe\ovsdb`:    {"npipe", `\\.\pipe\ovsdb`},
		`winpipe://./pipe/ovsdb`:  {"winpipe", `\\.\pipe\ovsdb`},
		`unix:C:\ovs\run\db.sock`: {"unix", `C:\ovs\run\db.sock`},
		`tcp:127.0.0.1:6640`:      {"tcp", "127.0.0.1:6640"},
	} {
		if got, err := ParseEndpoint(in); err != nil || got != want {
			t.Errorf("ParseEndpoint(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if got, err := ParseEndpoint(`npipe:\\otherhost\pipe\ovsdb`); err == nil {
		t.Errorf("remote pipe accepted: %v", got)
	}
}

// TestRelayReachesPipe speaks JSON-RPC through the relay openTransport
// starts, for a pipe endpoint and for a unix: path OVS serves as a pipe, and
// checks that stop closes the relay.
func TestRelayReachesPipe(t *testing.T) {
	dir := fmt.Sprintf(`C:\seine-test\%d-%d`, os.Getpid(), time.Now().UnixNano())
	for _, tc := range []struct{ endpoint, pipe string }{
		{`npipe:` + uniquePipe("relay"), ""},
		{`unix:` + dir + `\db.sock`, winpipe.NameForPath("", dir+`\db.sock`)},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			ep, err := ParseEndpoint(tc.endpoint)
			if err != nil {
				t.Fatal(err)
			}
			pipe := tc.pipe
			if pipe == "" {
				pipe = ep.Address
			}
			f := newFakeOVSDB(t, pipe)
			addr, stop, err := openTransport(ep, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			hostport, ok := strings.CutPrefix(addr, "tcp:127.0.0.1:")
			if !ok || hostport == "" {
				t.Fatalf("libovsdb address %q, want tcp:127.0.0.1:<port>", addr)
			}
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "tcp:"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprint(c, `{"method":"list_dbs","params":[],"id":7}`); err != nil {
				t.Fatal(err)
			}
			var reply struct {
				ID     int      `json:"id"`
				Result []string `json:"result"`
			}
			if err := json.NewDecoder(bufio.NewReader(c)).Decode(&reply); err != nil {
				t.Fatalf("list_dbs reply: %v", err)
			}
			if reply.ID != 7 || len(reply.Result) != 1 || reply.Result[0] != "Seine_Test" {
				t.Fatalf("list_dbs reply %+v", reply)
			}
			stop()
			select {
			case <-f.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("pipe connection still open after the relay stopped")
			}
			if c2, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "tcp:"), 5*time.Second); err == nil {
				c2.Close()
				t.Fatal("relay still accepts after stop")
			}
		})
	}
}

// TestConnectOverPipe runs libovsdb through the relay: it lists the server's
// databases over the pipe and fails because Open_vSwitch is not among them,
// and the failed Connect leaves no connection behind.
func TestConnectOverPipe(t *testing.T) {
	name := uniquePipe("connect")
	f := newFakeOVSDB(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Connect(ctx, Config{Endpoint: "npipe:" + name})
	if err == nil {
		c.Close()
		t.Fatal("Connect to a server without Open_vSwitch succeeded")
	}
	if !strings.Contains(err.Error(), "Open_vSwitch") {
		t.Errorf("Connect error %q does not name the missing database", err)
	}
	select {
	case m := <-f.methods:
		if m != "list_dbs" {
			t.Errorf("first method over the pipe %q, want list_dbs", m)
		}
	default:
		t.Fatal("the server on the pipe received nothing")
	}
	select {
	case <-f.closed:
	case <-ctx.Done():
		t.Fatal("pipe connection still open after Connect failed")
	}
}
