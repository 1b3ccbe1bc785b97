package openflow

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/internal/winpipe"
	"github.com/seine-cni/seine/ovs/internal/winpipe/pipetest"
)

// newPipeSwitch runs the fake switch on the named pipe name.
func newPipeSwitch(t *testing.T, name string) *fakeSwitch {
	t.Helper()
	fs := &fakeSwitch{t: t, ln: pipetest.Listen(t, name), path: name, received: make(chan []byte, 1024)}
	t.Cleanup(fs.close)
	go fs.accept()
	return fs
}

// TestPipeDialer connects over a named pipe, addressed as OVS's tools do,
// negotiates, sets up, and round-trips a barrier and a switch-initiated echo.
func TestPipeDialer(t *testing.T) {
	unique := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	mgmt := `C:\seine-test\` + unique + `\br-int.mgmt`
	for _, tc := range []struct{ pipe, addr string }{
		{`\\.\pipe\seine-of-` + unique, `winpipe:\\.\pipe\seine-of-` + unique},
		{`\\.\pipe\seine-of2-` + unique, `npipe://./pipe/seine-of2-` + unique},
		{winpipe.NameForPath("", mgmt), "unix:" + mgmt},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			fs := newPipeSwitch(t, tc.pipe)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, tc.addr, Config{Dialer: PipeDialer})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Features().DatapathID != 0x42 {
				t.Errorf("features = %+v, want the fake switch's datapath 0x42", c.Features())
			}
			if err := c.Barrier(ctx); err != nil {
				t.Fatalf("barrier over the pipe: %v", err)
			}
			// The switch asks too: the client answers an echo request.
			fs.mu.Lock()
			sc := fs.conns[0]
			fs.mu.Unlock()
			if _, err := sc.Write(marshal(&EchoRequest{Data: []byte("seine")}, 77)); err != nil {
				t.Fatal(err)
			}
			var types []string
			for {
				select {
				case raw := <-fs.received:
					h, m, err := Unmarshal(raw)
					if err != nil {
						t.Fatal(err)
					}
					types = append(types, Describe(m))
					if r, ok := m.(*EchoReply); ok {
						if h.Xid != 77 || string(r.Data) != "seine" {
							t.Fatalf("echo reply xid %d data %q, want 77 %q", h.Xid, r.Data, "seine")
						}
						if types[0] != "set_config" {
							t.Errorf("switch received %v, want set_config first", types)
						}
						return
					}
				case <-ctx.Done():
					t.Fatalf("no echo reply over the pipe; switch received %v", types)
				}
			}
		})
	}
}

func TestPipeDialerErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{
		`winpipe:\\otherhost\pipe\x`, // remote pipes are refused
		fmt.Sprintf(`winpipe:\\.\pipe\seine-of-missing-%d`, os.Getpid()),
		"unix:",
		"bogus:x",
	} {
		if c, err := PipeDialer(ctx, addr); err == nil {
			c.Close()
			t.Errorf("PipeDialer(%q) succeeded", addr)
		}
	}
}
