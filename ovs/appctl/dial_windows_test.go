package appctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/internal/winpipe"
	"github.com/seine-cni/seine/ovs/internal/winpipe/pipetest"
)

// serveUnixctl answers unixctl requests on ln as ovs-vswitchd does: "version"
// with a version line, "echo-args" with its arguments, anything else with an
// error. It first sends a JSON-RPC echo of its own, which a client must answer.
func serveUnixctl(t *testing.T, ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				dec, enc := json.NewDecoder(c), json.NewEncoder(c)
				if enc.Encode(map[string]any{"method": "echo", "params": []string{"ping"}, "id": "echo"}) != nil {
					return
				}
				for {
					var req struct {
						Method string          `json:"method"`
						Params []string        `json:"params"`
						ID     json.RawMessage `json:"id"`
						Result json.RawMessage `json:"result"`
					}
					if dec.Decode(&req) != nil {
						return
					}
					reply := map[string]any{"id": req.ID, "result": nil, "error": nil}
					switch req.Method {
					case "": // the client's answer to our echo
						if string(req.Result) != `["ping"]` {
							t.Errorf("echo answer %s, want [\"ping\"]", req.Result)
						}
						continue
					case "version":
						reply["result"] = "ovs-vswitchd (Open vSwitch) 3.1.0\n"
					case "echo-args":
						b, _ := json.Marshal(req.Params)
						reply["result"] = string(b)
					default:
						reply["error"] = fmt.Sprintf("%q is not a valid command", req.Method)
					}
					if enc.Encode(reply) != nil {
						return
					}
				}
			}()
		}
	}()
}

func TestPipeCtlPath(t *testing.T) {
	for _, tc := range []struct{ rundir, target, want string }{
		{"", "ovs-vswitchd", `C:\openvswitch\var\run\openvswitch\ovs-vswitchd.ctl`},
		{`D:\ovs\run`, "ovsdb-server", `D:\ovs\run\ovsdb-server.ctl`},
		{`D:\ovs\run`, `E:\elsewhere\x.ctl`, `E:\elsewhere\x.ctl`},
	} {
		if got := PipeCtlPath(tc.rundir, tc.target); got != tc.want {
			t.Errorf("PipeCtlPath(%q, %q) = %q, want %q", tc.rundir, tc.target, got, tc.want)
		}
	}
}

// TestDialPipe runs calls over a pipe named as OVS for Windows names the
// unixctl socket, reached by target, by path and by pipe name.
func TestDialPipe(t *testing.T) {
	rundir := fmt.Sprintf(`C:\seine-test\%d-%d`, os.Getpid(), time.Now().UnixNano())
	name := winpipe.NameForPath("", PipeCtlPath(rundir, "ovs-vswitchd"))
	serveUnixctl(t, pipetest.Listen(t, name))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dials := map[string]func() (*Client, error){
		"target":    func() (*Client, error) { return DialPipeTarget(ctx, rundir, "ovs-vswitchd") },
		"path":      func() (*Client, error) { return DialWith(ctx, rundir+`\ovs-vswitchd.ctl`, DialPipe) },
		"pipe name": func() (*Client, error) { return DialWith(ctx, name, DialPipe) },
		"winpipe":   func() (*Client, error) { return DialWith(ctx, "winpipe:"+name, DialPipe) },
	}
	for what, dial := range dials {
		t.Run(what, func(t *testing.T) {
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if v, err := c.Version(ctx); err != nil || v != "ovs-vswitchd (Open vSwitch) 3.1.0\n" {
				t.Fatalf("version = %q, %v", v, err)
			}
			if out, err := c.Call(ctx, "echo-args", "a b", "c"); err != nil || out != `["a b","c"]` {
				t.Fatalf("echo-args = %q, %v", out, err)
			}
			_, err = c.Call(ctx, "no/such")
			var ae *Error
			if !errors.As(err, &ae) || ae.Text != `"no/such" is not a valid command` {
				t.Fatalf("unknown command: %v, want *Error from the daemon", err)
			}
		})
	}
}

func TestDialPipeMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rundir := fmt.Sprintf(`C:\seine-test-missing\%d`, os.Getpid())
	if c, err := DialPipeTarget(ctx, rundir, "ovs-vswitchd"); err == nil {
		c.Close()
		t.Fatal("dial of a daemon that is not running succeeded")
	}
}
