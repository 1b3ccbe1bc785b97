package winpipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// DialFunc opens the far side of a relayed connection.
type DialFunc func(ctx context.Context) (net.Conn, error)

// AdmitFunc decides whether the relay serves a connection it accepted: an
// error refuses it, and the connection is closed without the far side
// being dialled. OwnProcess admits this process's connections only.
type AdmitFunc func(c net.Conn) error

// dialTimeout bounds how long one relayed connection waits for the pipe
// (all instances busy); the client sees its connection closed and retries.
const dialTimeout = 10 * time.Second

// Relay listens on 127.0.0.1:<ephemeral port> and joins every connection it
// accepts to a new connection opened with its DialFunc. It lets a library that
// dials only unix or tcp sockets (libovsdb) reach a named pipe.
//
// Any local process can connect to the loopback port while the relay runs;
// without an AdmitFunc it would reach the pipe with the relay owner's rights
// (the agent's: all of OVSDB). Seine's OVSDB client admits only its own
// process (OwnProcess).
type Relay struct {
	ln     net.Listener
	dial   DialFunc
	admit  AdmitFunc
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewRelay starts a relay to dial that serves the connections admit admits
// (every one if admit is nil). log may be nil.
func NewRelay(dial DialFunc, admit AdmitFunc, log *slog.Logger) (*Relay, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{ln: ln, dial: dial, admit: admit, log: log, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the relay's loopback address, host:port.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Close stops accepting, closes every relayed connection and waits for the
// relay's goroutines to end.
func (r *Relay) Close() error {
	r.cancel()
	err := r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// track registers c so Close can close it; false if the relay is closing.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if r.ctx.Err() == nil {
				r.log.Error("relay accept failed", "addr", r.Addr(), "err", err)
			}
			return
		}
		if !r.track(c) {
			c.Close()
			return
		}
		r.wg.Add(1)
		go r.serve(c)
	}
}

func (r *Relay) serve(front net.Conn) {
	defer r.wg.Done()
	defer r.untrack(front)
	if r.admit != nil {
		if err := r.admit(front); err != nil {
			r.log.Warn("relay refused a connection", "client", front.RemoteAddr().String(), "err", err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, dialTimeout)
	back, err := r.dial(ctx)
	cancel()
	if err != nil {
		r.log.Warn("relay dial failed", "client", front.RemoteAddr().String(), "err", err)
		return
	}
	if !r.track(back) {
		back.Close()
		return
	}
	defer r.untrack(back)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(back, front)
	go pipe(front, back)
	<-done
	// One side ended: close both so the other copy returns too.
	front.Close()
	back.Close()
	<-done
}
