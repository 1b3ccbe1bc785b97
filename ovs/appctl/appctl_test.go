package appctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer reads requests from conn and lets each test script the replies.
type fakeServer struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
}

func newPair(t *testing.T) (*Client, *fakeServer) {
	a, b := socketpair(t)
	c := New(a)
	t.Cleanup(func() { c.Close() })
	return c, &fakeServer{t: t, conn: b, dec: json.NewDecoder(b)}
}

// read decodes the next request.
func (s *fakeServer) read() (map[string]any, error) {
	var m map[string]any
	err := s.dec.Decode(&m)
	return m, err
}

func (s *fakeServer) write(raw string) error {
	_, err := io.WriteString(s.conn, raw)
	return err
}

// serve answers n requests with reply(request), in a goroutine; the returned
// channel yields the requests seen (or the error that stopped it).
func (s *fakeServer) serve(n int, reply func(req map[string]any) string) <-chan any {
	seen := make(chan any, n+1)
	go func() {
		for range n {
			req, err := s.read()
			if err != nil {
				seen <- err
				return
			}
			seen <- req
			if err := s.write(reply(req)); err != nil {
				seen <- err
				return
			}
		}
	}()
	return seen
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCallResult(t *testing.T) {
	c, s := newPair(t)
	seen := s.serve(2, func(req map[string]any) string {
		return fmt.Sprintf(`{"id":%v,"result":"out of %s\n","error":null}`, req["id"], req["method"])
	})
	got, err := c.Call(ctxT(t), "dpif/show", "a", "b c")
	if err != nil || got != "out of dpif/show\n" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	req := <-seen
	want := map[string]any{"method": "dpif/show", "params": []any{"a", "b c"}, "id": 0.0}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("request %v, want %v", req, want)
	}
	// No arguments still sends an empty array (OVS rejects null params), and
	// ids increase.
	if _, err := c.Call(ctxT(t), "version"); err != nil {
		t.Fatal(err)
	}
	req = <-seen
	want = map[string]any{"method": "version", "params": []any{}, "id": 1.0}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("request %v, want %v", req, want)
	}
}

func TestCallError(t *testing.T) {
	c, s := newPair(t)
	const text = "\"nope\" is not a valid command (use \"list-commands\" to see a list of valid commands)"
	s.serve(1, func(req map[string]any) string {
		b, _ := json.Marshal(text)
		return fmt.Sprintf(`{"id":%v,"result":null,"error":%s}`, req["id"], b)
	})
	_, err := c.Call(ctxT(t), "nope")
	var ae *Error
	if !errors.As(err, &ae) || ae.Text != text || ae.Method != "nope" {
		t.Fatalf("Call = %v, want *Error with the server's text", err)
	}
	if !strings.Contains(err.Error(), "appctl nope: \"nope\" is not a valid command") {
		t.Errorf("Error() = %q", err)
	}
}

func TestFragmentedReply(t *testing.T) {
	c, s := newPair(t)
	go func() {
		req, err := s.read()
		if err != nil {
			return
		}
		reply := fmt.Sprintf(`{"id":%v,"error":null,"result":"line1\nline2 \"quoted\" \u00e9\n"}`, req["id"])
		for i := range len(reply) {
			if s.write(reply[i:i+1]) != nil {
				return
			}
		}
	}()
	got, err := c.Call(ctxT(t), "x")
	if err != nil || got != "line1\nline2 \"quoted\" é\n" {
		t.Fatalf("Call = %q, %v", got, err)
	}
}

func TestEchoFromServer(t *testing.T) {
	c, s := newPair(t)
	echoReply := make(chan map[string]any, 1)
	go func() {
		req, err := s.read()
		if err != nil {
			return
		}
		_ = s.write(`{"method":"echo","params":["ping"],"id":"echo"}`)
		if m, err := s.read(); err == nil {
			echoReply <- m
		}
		_ = s.write(fmt.Sprintf(`{"id":%v,"result":"done","error":null}`, req["id"]))
	}()
	got, err := c.Call(ctxT(t), "x")
	if err != nil || got != "done" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	want := map[string]any{"id": "echo", "result": []any{"ping"}, "error": nil}
	if m := <-echoReply; !reflect.DeepEqual(m, want) {
		t.Errorf("echo reply %v, want %v", m, want)
	}
}

func TestJSONResult(t *testing.T) {
	c, s := newPair(t)
	s.serve(1, func(req map[string]any) string {
		return fmt.Sprintf(`{"id":%v,"result":{"a":1},"error":null}`, req["id"])
	})
	got, err := c.Call(ctxT(t), "x")
	if err != nil || got != `{"a":1}` {
		t.Fatalf("Call = %q, %v", got, err)
	}
}

func TestContextEndsCall(t *testing.T) {
	c, s := newPair(t)
	go s.read() // read the request, never answer
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, "slow")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want DeadlineExceeded", err)
	}
	// The stream may now hold a late reply: the client refuses further calls.
	if _, err := c.Call(ctxT(t), "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Call after an interrupted call = %v, want ErrClosed", err)
	}

	c2, s2 := newPair(t)
	go s2.read()
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := c2.Call(ctx, "slow"); !errors.Is(err, context.Canceled) {
		t.Errorf("Call = %v, want Canceled", err)
	}
}

func TestServerClosesOrMisbehaves(t *testing.T) {
	for name, reply := range map[string]string{
		"closes":    "",
		"wrong id":  `{"id":7,"result":"x","error":null}`,
		"not json":  `<html>`,
		"string id": `{"id":"a","result":"x","error":null}`,
	} {
		t.Run(name, func(t *testing.T) {
			c, s := newPair(t)
			go func() {
				if _, err := s.read(); err != nil {
					return
				}
				if reply == "" {
					s.conn.Close()
					return
				}
				_ = s.write(reply)
			}()
			if _, err := c.Call(ctxT(t), "x"); err == nil {
				t.Fatal("Call succeeded")
			} else if reply == "" && !errors.Is(err, io.EOF) {
				t.Errorf("Call = %v, want EOF", err)
			}
			if _, err := c.Call(ctxT(t), "x"); !errors.Is(err, ErrClosed) {
				t.Errorf("second Call = %v, want ErrClosed", err)
			}
		})
	}
}

func TestConcurrentCallsAreSerialised(t *testing.T) {
	c, s := newPair(t)
	const n = 20
	s.serve(n, func(req map[string]any) string {
		return fmt.Sprintf(`{"id":%v,"result":%q,"error":null}`, req["id"], req["params"].([]any)[0])
	})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			arg := fmt.Sprint(i)
			if got, err := c.Call(ctxT(t), "echo-arg", arg); err != nil || got != arg {
				t.Errorf("Call(%s) = %q, %v", arg, got, err)
			}
		}()
	}
	wg.Wait()
}

func TestCtlPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ovs-vswitchd.pid"), []byte("4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := CtlPath(dir, "ovs-vswitchd")
	if want := filepath.Join(dir, "ovs-vswitchd.4242.ctl"); err != nil || got != want {
		t.Errorf("CtlPath = %q, %v; want %q", got, err, want)
	}
	if got, err := CtlPath(dir, "/run/x.ctl"); err != nil || got != "/run/x.ctl" {
		t.Errorf("CtlPath(path) = %q, %v", got, err)
	}
	if _, err := CtlPath(dir, "ovsdb-server"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CtlPath without pidfile = %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.pid"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CtlPath(dir, "bad"); err == nil || !strings.Contains(err.Error(), "bad pidfile") {
		t.Errorf("CtlPath with a bad pidfile = %v", err)
	}
}

func TestCommandHelpers(t *testing.T) {
	c, s := newPair(t)
	seen := s.serve(9, func(req map[string]any) string {
		return fmt.Sprintf(`{"id":%v,"result":"","error":null}`, req["id"])
	})
	ctx := ctxT(t)
	calls := []struct {
		call func() (string, error)
		want []any
	}{
		{func() (string, error) { return c.Version(ctx) }, []any{"version"}},
		{func() (string, error) { return c.OfprotoTrace(ctx, "br-int", "in_port=1,ip") }, []any{"ofproto/trace", "br-int", "in_port=1,ip"}},
		{func() (string, error) { return c.OfprotoTrace(ctx, "br-int", "in_port=1", "-generate") }, []any{"ofproto/trace", "br-int", "in_port=1", "-generate"}},
		{func() (string, error) { return c.DumpConntrack(ctx, 65520) }, []any{"dpctl/dump-conntrack", "zone=65520"}},
		{func() (string, error) { return c.DumpConntrack(ctx, AllZones) }, []any{"dpctl/dump-conntrack"}},
		{func() (string, error) { return c.DpifShow(ctx) }, []any{"dpif/show"}},
		{func() (string, error) { return c.TnlARPShow(ctx) }, []any{"tnl/arp/show"}},
		{func() (string, error) { return c.OVSRouteShow(ctx) }, []any{"ovs/route/show"}},
		{func() (string, error) { return c.VlogSet(ctx, "dpif:file:dbg") }, []any{"vlog/set", "dpif:file:dbg"}},
	}
	for _, tc := range calls {
		if _, err := tc.call(); err != nil {
			t.Fatal(err)
		}
		req := (<-seen).(map[string]any)
		got := append([]any{req["method"]}, req["params"].([]any)...)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("sent %v, want %v", got, tc.want)
		}
	}
}
