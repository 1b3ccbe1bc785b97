// Package server is the agent side of the seine-cni protocol: it serves CNI
// requests on the agent's unix socket and dispatches them to a Handler,
// which does the real work (IPAM, pod interface, OVS port, flows).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/seine-cni/seine/cni"
)

// Handler does the work behind each CNI command. Every method gets the
// request with NetConf parsed, and a context that ends at the plugin's
// deadline (a little before it) or when the server shuts down.
//
// A returned *types.Error (also wrapped) reaches the runtime with its code
// and message; any other error becomes code 999 with its message, and a
// context deadline becomes code 11 (try again later). Requests for one
// container ID never run concurrently, and GC runs alone.
type Handler interface {
	// Add returns the result in any 1.x version; it is sent as 1.1.0 and
	// converted by the plugin to the runtime's version.
	Add(ctx context.Context, r *cni.Request) (*current.Result, error)
	// Del must succeed when what it would delete is already gone.
	Del(ctx context.Context, r *cni.Request) error
	Check(ctx context.Context, r *cni.Request) error
	// Status returns nil when ADD would work, or a *types.Error with code
	// 50 (not available) or 51 (limited connectivity).
	Status(ctx context.Context, r *cni.Request) error
	// GC releases every attachment of this network that is not in valid.
	GC(ctx context.Context, r *cni.Request, valid []cni.Attachment) error
}

// Options configure a Server.
type Options struct {
	// SocketPath defaults to cni.DefaultSocketPath().
	SocketPath string
	Handler    Handler
	// Logger defaults to one that discards.
	Logger *slog.Logger
	// MaxRequestTimeout caps the time a handler gets; default cni.MaxRequestTimeout.
	MaxRequestTimeout time.Duration
}

// Server serves the seine-cni protocol on a unix socket.
type Server struct {
	socket  string
	handler Handler
	log     *slog.Logger
	maxWait time.Duration
	locks   *locks

	mu       sync.Mutex
	http     *http.Server
	sockInfo os.FileInfo
	cancel   context.CancelFunc
	served   chan error
}

// New checks opts and returns a server that is not listening yet.
func New(opts Options) (*Server, error) {
	if opts.Handler == nil {
		return nil, errors.New("cni server: no handler")
	}
	s := &Server{
		socket:  opts.SocketPath,
		handler: opts.Handler,
		log:     opts.Logger,
		maxWait: opts.MaxRequestTimeout,
		locks:   newLocks(),
	}
	if s.socket == "" {
		s.socket = cni.DefaultSocketPath()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxWait <= 0 {
		s.maxWait = cni.MaxRequestTimeout
	}
	return s, nil
}

// SocketPath is where the server listens.
func (s *Server) SocketPath() string { return s.socket }

// Start creates the socket directory (0700) if needed, removes a stale
// socket left by a previous agent, listens (socket mode 0600 on Linux),
// replays the DELs the plugin deferred while no agent was listening, and
// then serves in the background until Shutdown. It fails if another process
// is serving the socket.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		return errors.New("cni server: already started")
	}
	if err := os.MkdirAll(filepath.Dir(s.socket), 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStaleSocket(s.socket); err != nil {
		return err
	}
	l, err := listen(s.socket)
	if err != nil {
		return err
	}
	info, err := os.Lstat(s.socket)
	if err != nil {
		l.Close()
		return fmt.Errorf("stat socket: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	// Connections made from here on wait in the listen backlog until the
	// spool is replayed, so a deferred DEL always runs before newer requests.
	s.replayPendingDels(base)

	mux := http.NewServeMux()
	for _, cmd := range cni.Commands {
		mux.HandleFunc("POST "+cmd.Path(), func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, cmd) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_ = cni.WriteResponse(w, http.StatusNotFound, &cni.Response{Error: cni.Errorf(types.ErrInternal,
			"seine-agent does not serve %s %s: seine-cni and seine-agent speak different protocol versions", r.Method, r.URL.Path)})
	})
	s.http = &http.Server{
		Handler:           mux,
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.sockInfo = info
	s.cancel = cancel
	s.served = make(chan error, 1)
	go func() { s.served <- s.http.Serve(l) }()
	s.log.Info("CNI server listening", "socket", s.socket)
	return nil
}

// Shutdown stops accepting requests, waits for those in flight until ctx
// ends (then cancels their contexts and closes their connections), and
// removes the socket.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http == nil {
		return nil
	}
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.cancel()
		_ = s.http.Close()
		err = fmt.Errorf("cni server shutdown: %w", err)
	}
	s.cancel()
	if serveErr := <-s.served; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	// Remove the socket only if it is still ours.
	if info, statErr := os.Lstat(s.socket); statErr == nil && os.SameFile(info, s.sockInfo) {
		if rmErr := os.Remove(s.socket); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove socket: %w", rmErr))
		}
	}
	s.http = nil
	s.log.Info("CNI server stopped", "socket", s.socket)
	return err
}

// Run starts the server, serves until ctx ends and shuts down, giving
// requests in flight up to grace to finish.
func (s *Server) Run(ctx context.Context, grace time.Duration) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return s.Shutdown(sctx)
}

// removeStaleSocket deletes a socket nobody serves. It refuses to delete a
// live socket (another agent) or anything that is not a socket.
func removeStaleSocket(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket %s: %w", path, err)
	}
	if info.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("another process is serving %s (is another seine-agent running?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// maxRequestBytes bounds a request body (the network config is in it).
const maxRequestBytes = 4 << 20

func (s *Server) serve(w http.ResponseWriter, r *http.Request, cmd cni.Command) {
	req := &cni.Request{}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes))
	if err == nil {
		err = json.Unmarshal(data, req)
	}
	if err != nil {
		_ = cni.WriteResponse(w, http.StatusBadRequest, &cni.Response{Error: cni.Errorf(types.ErrDecodingFailure, "seine-agent could not decode the request: %v", err)})
		return
	}
	if req.Command != cmd {
		_ = cni.WriteResponse(w, http.StatusBadRequest, &cni.Response{Error: cni.Errorf(types.ErrInternal, "request for %s sent to %s", req.Command, r.URL.Path)})
		return
	}
	resp := s.do(r.Context(), req)
	if err := cni.WriteResponse(w, http.StatusOK, resp); err != nil {
		s.log.Warn("CNI response not delivered", "command", cmd, "container", req.ContainerID, "err", err)
	}
}

// do runs one request through the handler and returns the response to send.
func (s *Server) do(ctx context.Context, req *cni.Request) *cni.Response {
	start := time.Now()
	timeout := s.timeout(req)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	res, err := s.dispatch(ctx, req)
	resp := &cni.Response{}
	if err == nil && res != nil {
		resp.Result, err = encodeResult(res)
	}
	if err != nil {
		resp.Result = nil
		resp.Error = toCNIError(req, err, timeout)
	}
	attrs := []any{"command", req.Command, "container", req.ContainerID, "ifname", req.IfName,
		"pod", req.K8s.PodNamespace + "/" + req.K8s.PodName, "duration", time.Since(start)}
	if resp.Error != nil {
		s.log.Warn("CNI request failed", append(attrs, "code", resp.Error.Code, "err", resp.Error.Error())...)
	} else {
		s.log.Info("CNI request done", attrs...)
	}
	return resp
}

// timeout gives the handler slightly less than the plugin waits, so that
// the handler's error, not the plugin's own timeout, reaches the runtime.
func (s *Server) timeout(req *cni.Request) time.Duration {
	d := time.Duration(req.TimeoutMillis) * time.Millisecond
	if d <= 0 {
		d = cni.DefaultRequestTimeout
	}
	d -= min(d/10, time.Second)
	return min(d, s.maxWait)
}

func (s *Server) dispatch(ctx context.Context, req *cni.Request) (res *current.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("CNI handler panicked", "command", req.Command, "container", req.ContainerID, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, cni.Errorf(types.ErrInternal, "seine-agent failed on %s for container %s (panic: %v); see the seine-agent log", req.Command, req.ContainerID, p)
		}
	}()
	conf, err := cni.ParseNetConf(req.Config)
	if err != nil {
		return nil, err
	}
	req.NetConf = conf
	if req.CNIVersion == "" {
		req.CNIVersion = conf.CNIVersion
	}

	switch req.Command {
	case cni.CmdStatus:
		return nil, s.handler.Status(ctx, req)
	case cni.CmdGC:
		unlock, err := s.locks.lockAll(ctx)
		if err != nil {
			return nil, fmt.Errorf("wait for requests in flight before GC: %w", err)
		}
		defer unlock()
		return nil, s.handler.GC(ctx, req, req.ValidAttachments)
	}
	if req.ContainerID == "" {
		return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "%s request without a container ID", req.Command)
	}
	unlock, err := s.locks.lockContainer(ctx, req.ContainerID)
	if err != nil {
		return nil, fmt.Errorf("wait for another request for container %s: %w", req.ContainerID, err)
	}
	defer unlock()
	switch req.Command {
	case cni.CmdAdd:
		res, err := s.handler.Add(ctx, req)
		if err == nil && res == nil {
			err = fmt.Errorf("seine-agent produced no result for ADD of container %s", req.ContainerID)
		}
		return res, err
	case cni.CmdDel:
		return nil, s.handler.Del(ctx, req)
	case cni.CmdCheck:
		return nil, s.handler.Check(ctx, req)
	}
	return nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "unknown CNI command %q", req.Command)
}

func encodeResult(res *current.Result) (json.RawMessage, error) {
	r, err := res.GetAsVersion(cni.ResultVersion)
	if err != nil {
		return nil, fmt.Errorf("convert result to CNI %s: %w", cni.ResultVersion, err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return data, nil
}

// toCNIError maps a handler error to what the runtime sees.
func toCNIError(req *cni.Request, err error, timeout time.Duration) *types.Error {
	var te *types.Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, context.DeadlineExceeded):
		return cni.Errorf(types.ErrTryAgainLater, "seine-agent did not finish %s for container %s within %s: %v",
			req.Command, req.ContainerID, timeout.Round(time.Millisecond), err)
	case errors.Is(err, context.Canceled):
		return cni.Errorf(types.ErrTryAgainLater, "seine-agent abandoned %s for container %s (shutting down or the plugin went away): %v",
			req.Command, req.ContainerID, err)
	default:
		return types.NewError(types.ErrInternal, strings.TrimSpace(err.Error()), "")
	}
}

// replayPendingDels hands the handler every DEL the plugin spooled while no
// agent listened. A replayed DEL that fails stays spooled for the next start.
func (s *Server) replayPendingDels(ctx context.Context) {
	dir := cni.PendingDelDir(s.socket)
	pending, err := cni.ReadPendingDels(dir)
	if err != nil {
		s.log.Error("some deferred CNI DELs cannot be replayed", "dir", dir, "err", err)
	}
	for _, p := range pending {
		resp := s.do(ctx, p.Request)
		if resp.Error != nil && resp.Error.Code == types.ErrInvalidNetworkConfig {
			s.log.Error("dropping deferred CNI DEL with an invalid config", "file", p.File, "err", resp.Error.Error())
		} else if resp.Error != nil {
			s.log.Error("deferred CNI DEL failed; it stays spooled for the next start", "file", p.File, "container", p.Request.ContainerID, "err", resp.Error.Error())
			continue
		}
		if err := cni.RemovePendingDel(p.File); err != nil {
			s.log.Error("deferred CNI DEL done but not removed", "file", p.File, "err", err)
		}
	}
}
