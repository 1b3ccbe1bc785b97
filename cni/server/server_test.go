package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/seine-cni/seine/cni"
)

// funcHandler lets each test supply only the methods it cares about.
type funcHandler struct {
	add    func(ctx context.Context, r *cni.Request) (*current.Result, error)
	del    func(ctx context.Context, r *cni.Request) error
	check  func(ctx context.Context, r *cni.Request) error
	status func(ctx context.Context, r *cni.Request) error
	gc     func(ctx context.Context, r *cni.Request, valid []cni.Attachment) error
}

func (h *funcHandler) Add(ctx context.Context, r *cni.Request) (*current.Result, error) {
	if h.add == nil {
		return okResult(), nil
	}
	return h.add(ctx, r)
}

func (h *funcHandler) Del(ctx context.Context, r *cni.Request) error {
	if h.del == nil {
		return nil
	}
	return h.del(ctx, r)
}

func (h *funcHandler) Check(ctx context.Context, r *cni.Request) error {
	if h.check == nil {
		return nil
	}
	return h.check(ctx, r)
}

func (h *funcHandler) Status(ctx context.Context, r *cni.Request) error {
	if h.status == nil {
		return nil
	}
	return h.status(ctx, r)
}

func (h *funcHandler) GC(ctx context.Context, r *cni.Request, valid []cni.Attachment) error {
	if h.gc == nil {
		return nil
	}
	return h.gc(ctx, r, valid)
}

func okResult() *current.Result {
	ip := netip.MustParsePrefix("10.244.1.5/24")
	return &current.Result{
		CNIVersion: "1.0.0",
		IPs:        []*current.IPConfig{{Address: net.IPNet{IP: ip.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}}},
	}
}

// shortDir returns a fresh directory with a short path (a unix socket path
// must fit in 108 bytes; t.TempDir() can be longer), removed at cleanup.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "seine-cni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimSpace(string(p)))
	return len(p), nil
}

func startServer(t *testing.T, socket string, h Handler) *Server {
	t.Helper()
	s, err := New(Options{SocketPath: socket, Handler: h, Logger: slog.New(slog.NewTextHandler(testLogWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

func request(cmd cni.Command, container string) *cni.Request {
	conf := `{"cniVersion":"1.1.0","name":"seine","type":"seine"}`
	return &cni.Request{Command: cmd, ContainerID: container, IfName: "eth0", CNIVersion: "1.1.0", Config: []byte(conf)}
}

func do(t *testing.T, socket string, req *cni.Request) *cni.Response {
	t.Helper()
	// Without a deadline here the server's timeout comes from
	// req.TimeoutMillis (or its default), which tests control.
	resp, err := cni.NewClient(socket).Do(context.Background(), req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Command, req.ContainerID, err)
	}
	return resp
}

func TestSocketPermissions(t *testing.T) {
	socket := filepath.Join(shortDir(t), "run", "cni.sock")
	startServer(t, socket, &funcHandler{})
	info, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", info.Mode())
	}
	dinfo, err := os.Stat(filepath.Dir(socket))
	if err != nil {
		t.Fatal(err)
	}
	if dinfo.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %v, want 0700", dinfo.Mode().Perm())
	}
	// No leftovers of the private bind directory.
	entries, _ := os.ReadDir(filepath.Dir(socket))
	if len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket", len(entries))
	}
}

func TestStaleSocket(t *testing.T) {
	dir := shortDir(t)
	socket := filepath.Join(dir, "cni.sock")
	// A socket left by a crashed agent: bound, never unlinked, nobody listens.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	s := startServer(t, socket, &funcHandler{})
	if resp := do(t, socket, request(cni.CmdAdd, "c1")); resp.Error != nil {
		t.Fatalf("ADD after replacing a stale socket: %v", resp.Error)
	}

	// A second server on a live socket must not steal it.
	s2, _ := New(Options{SocketPath: socket, Handler: &funcHandler{}})
	if err := s2.Start(); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second server on a live socket: %v", err)
	}
	if resp := do(t, s.SocketPath(), request(cni.CmdAdd, "c1")); resp.Error != nil {
		t.Errorf("first server broken by the second: %v", resp.Error)
	}

	// Not a socket: refuse to delete it.
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s3, _ := New(Options{SocketPath: file, Handler: &funcHandler{}})
	if err := s3.Start(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("server over a regular file: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("regular file was removed: %v", err)
	}
}

func TestErrorMapping(t *testing.T) {
	socket := filepath.Join(shortDir(t), "cni.sock")
	h := &funcHandler{
		add: func(ctx context.Context, r *cni.Request) (*current.Result, error) {
			switch r.ContainerID {
			case "typed":
				return nil, fmt.Errorf("attach: %w", types.NewError(types.ErrUnknownContainer, "no such container", "netns gone"))
			case "plain":
				return nil, errors.New("ovsdb transaction failed: boom")
			case "slow":
				<-ctx.Done()
				return nil, fmt.Errorf("attach pod: %w", ctx.Err())
			case "panic":
				panic("nil map")
			case "noresult":
				return nil, nil
			}
			return okResult(), nil
		},
	}
	startServer(t, socket, h)
	tests := []struct {
		container string
		timeout   time.Duration
		code      uint
		msg       string
	}{
		{"typed", 0, types.ErrUnknownContainer, "no such container"},
		{"plain", 0, types.ErrInternal, "ovsdb transaction failed: boom"},
		{"slow", 300 * time.Millisecond, types.ErrTryAgainLater, "did not finish ADD for container slow"},
		{"panic", 0, types.ErrInternal, "panic: nil map"},
		{"noresult", 0, types.ErrInternal, "no result"},
	}
	for _, tt := range tests {
		t.Run(tt.container, func(t *testing.T) {
			req := request(cni.CmdAdd, tt.container)
			if tt.timeout > 0 {
				req.TimeoutMillis = tt.timeout.Milliseconds()
			}
			resp := do(t, socket, req)
			if resp.Error == nil || resp.Error.Code != tt.code || !strings.Contains(resp.Error.Msg, tt.msg) {
				t.Errorf("got %+v, want code %d containing %q", resp.Error, tt.code, tt.msg)
			}
			if resp.Result != nil {
				t.Errorf("error response carries a result: %s", resp.Result)
			}
		})
	}

	// The server parses the config itself and rejects a bad one.
	req := request(cni.CmdAdd, "ok")
	req.Config = []byte(`{"cniVersion":"1.1.0","name":"seine","type":"other"}`)
	if resp := do(t, socket, req); resp.Error == nil || resp.Error.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("bad config: %+v", resp.Error)
	}
	// The result is sent as 1.1.0 whatever the handler set.
	resp := do(t, socket, request(cni.CmdAdd, "ok"))
	res, err := current.NewResult(resp.Result)
	if err != nil || res.Version() != cni.ResultVersion {
		t.Errorf("result %s: %v", resp.Result, err)
	}
}

func TestUnknownProtocolVersion(t *testing.T) {
	socket := filepath.Join(shortDir(t), "cni.sock")
	startServer(t, socket, &funcHandler{})
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v9/add HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
	buf := make([]byte, 4096)
	n, _ := conn.Read(buf)
	if got := string(buf[:n]); !strings.Contains(got, "404") || !strings.Contains(got, "different protocol versions") {
		t.Errorf("answer to /v9/add: %q", got)
	}
}

func TestSameContainerSerialized(t *testing.T) {
	socket := filepath.Join(shortDir(t), "cni.sock")
	var mu sync.Mutex
	inFlight, maxInFlight := map[string]int{}, map[string]int{}
	release := make(chan struct{})
	entered := make(chan string, 10)
	h := &funcHandler{add: func(ctx context.Context, r *cni.Request) (*current.Result, error) {
		mu.Lock()
		inFlight[r.ContainerID]++
		maxInFlight[r.ContainerID] = max(maxInFlight[r.ContainerID], inFlight[r.ContainerID])
		mu.Unlock()
		entered <- r.ContainerID
		if r.ContainerID == "c1" {
			<-release
		}
		mu.Lock()
		inFlight[r.ContainerID]--
		mu.Unlock()
		return okResult(), nil
	}}
	startServer(t, socket, h)

	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp := do(t, socket, request(cni.CmdAdd, "c1")); resp.Error != nil {
				t.Errorf("ADD c1: %v", resp.Error)
			}
		}()
	}
	if got := <-entered; got != "c1" {
		t.Fatalf("first to enter: %s", got)
	}
	// Another container is not held up by c1.
	if resp := do(t, socket, request(cni.CmdAdd, "c2")); resp.Error != nil {
		t.Fatal(resp.Error)
	}
	if got := <-entered; got != "c2" {
		t.Fatalf("a second c1 ran while the first was in its handler")
	}
	close(release)
	wg.Wait()
	if maxInFlight["c1"] != 1 {
		t.Errorf("c1 ran %d at once, want 1", maxInFlight["c1"])
	}
}

func TestLocks(t *testing.T) {
	l := newLocks()
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	u1, err := l.lockContainer(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.lockContainer(short(), "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second lock of a: %v", err)
	}
	u2, err := l.lockContainer(short(), "b")
	if err != nil {
		t.Fatalf("lock of b while a held: %v", err)
	}
	if _, err := l.lockAll(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lockAll while containers held: %v", err)
	}
	// A waiting GC holds off new requests.
	gotAll := make(chan func())
	go func() {
		ua, err := l.lockAll(context.Background())
		if err != nil {
			t.Error(err)
		}
		gotAll <- ua
	}()
	waitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.exclWaiting == 1 })
	if _, err := l.lockContainer(short(), "c"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of c while GC waits: %v", err)
	}
	u1()
	u2()
	ua := <-gotAll
	if _, err := l.lockContainer(short(), "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock of a during GC: %v", err)
	}
	ua()
	u3, err := l.lockContainer(short(), "a")
	if err != nil {
		t.Fatalf("lock of a after GC: %v", err)
	}
	u3()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGracefulShutdown(t *testing.T) {
	socket := filepath.Join(shortDir(t), "cni.sock")
	entered := make(chan struct{})
	release := make(chan struct{})
	h := &funcHandler{add: func(ctx context.Context, r *cni.Request) (*current.Result, error) {
		close(entered)
		<-release
		return okResult(), nil
	}}
	s, err := New(Options{SocketPath: socket, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan *cni.Response)
	go func() { done <- do(t, socket, request(cni.CmdAdd, "c1")) }()
	<-entered
	shut := make(chan error)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// New connections are refused while the request in flight finishes.
	waitFor(t, func() bool {
		_, err := cni.NewClient(socket).Do(context.Background(), request(cni.CmdStatus, ""))
		return errors.Is(err, cni.ErrAgentUnreachable)
	})
	close(release)
	if resp := <-done; resp.Error != nil || resp.Result == nil {
		t.Errorf("request in flight during shutdown: %+v", resp)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after shutdown: %v", err)
	}
}

func TestForcedShutdownCancelsHandlers(t *testing.T) {
	socket := filepath.Join(shortDir(t), "cni.sock")
	entered := make(chan struct{})
	sawCancel := make(chan error, 1)
	h := &funcHandler{add: func(ctx context.Context, r *cni.Request) (*current.Result, error) {
		close(entered)
		<-ctx.Done()
		sawCancel <- ctx.Err()
		return nil, ctx.Err()
	}}
	s, err := New(Options{SocketPath: socket, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = cni.NewClient(socket).Do(context.Background(), request(cni.CmdAdd, "c1")) }()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err == nil {
		t.Error("shutdown with a stuck handler reported no error")
	}
	if err := <-sawCancel; !errors.Is(err, context.Canceled) {
		t.Errorf("handler context: %v", err)
	}
}

func TestReplayPendingDels(t *testing.T) {
	socket := filepath.Join(shortDir(t), "run", "cni.sock")
	dir := cni.PendingDelDir(socket)
	for _, id := range []string{"gone-1", "fails", "gone-2"} {
		req := request(cni.CmdDel, id)
		req.K8s.PodName = "pod-" + id
		if _, err := cni.SpoolDel(dir, req); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string
	h := &funcHandler{del: func(ctx context.Context, r *cni.Request) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.ContainerID+"/"+r.K8s.PodName)
		if r.NetConf == nil || r.NetConf.Name != "seine" {
			t.Errorf("replayed DEL without its parsed config: %+v", r.NetConf)
		}
		if r.ContainerID == "fails" {
			return errors.New("ovsdb down")
		}
		return nil
	}}
	s := startServer(t, socket, h)
	mu.Lock()
	if len(got) != 3 {
		t.Errorf("replayed %v, want the 3 spooled DELs", got)
	}
	mu.Unlock()
	left, err := cni.ReadPendingDels(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Request.ContainerID != "fails" {
		t.Errorf("left in the spool: %+v, want only the failed DEL", left)
	}
	_ = s
}

func TestRunUntilCancelled(t *testing.T) {
	socket := filepath.Join(shortDir(t), "cni.sock")
	s, err := New(Options{SocketPath: socket, Handler: &funcHandler{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- s.Run(ctx, time.Second) }()
	waitFor(t, func() bool {
		_, err := cni.NewClient(socket).Do(context.Background(), request(cni.CmdStatus, ""))
		return err == nil
	})
	cancel()
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Run returned: %v", err)
	}
}
