package openflow

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Client keeps a connection to one switch alive: it dials with exponential
// backoff, runs Config.OnConnect on every new connection (the agent replays
// its flows there after ovs-vswitchd restarts), and redials when the
// connection dies.
type Client struct {
	addr string
	cfg  Config

	mu    sync.Mutex
	cur   *Conn
	ready chan struct{} // closed while cur is usable
}

// NewClient returns a client for addr; call Run to start it.
func NewClient(addr string, cfg Config) *Client {
	cfg.setDefaults()
	return &Client{addr: addr, cfg: cfg, ready: make(chan struct{})}
}

// Run connects and reconnects until ctx is done, then closes the connection.
func (cl *Client) Run(ctx context.Context) error {
	delay := cl.cfg.BackoffMin
	log := cl.cfg.Logger.With("addr", cl.addr)
	for {
		c, err := cl.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("openflow: connect failed", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay + rand.N(delay/4+1)):
			}
			delay = min(2*delay, cl.cfg.BackoffMax)
			continue
		}
		delay = cl.cfg.BackoffMin
		log.Info("openflow: connected", "dpid", c.Features().DatapathID)
		cl.publish(c)
		select {
		case <-ctx.Done():
			cl.unpublish(c)
			c.Close()
			return ctx.Err()
		case <-c.Done():
			cl.unpublish(c)
			log.Warn("openflow: connection lost", "err", c.Err())
		}
	}
}

func (cl *Client) connect(ctx context.Context) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := Dial(dctx, cl.addr, cl.cfg)
	if err != nil {
		return nil, err
	}
	if cl.cfg.OnConnect != nil {
		if err := cl.cfg.OnConnect(ctx, c); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (cl *Client) publish(c *Conn) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.cur = c
	close(cl.ready)
}

func (cl *Client) unpublish(c *Conn) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.cur == c {
		cl.cur = nil
		cl.ready = make(chan struct{})
	}
}

// Conn waits for a live connection.
func (cl *Client) Conn(ctx context.Context) (*Conn, error) {
	for {
		cl.mu.Lock()
		c, ready := cl.cur, cl.ready
		cl.mu.Unlock()
		if c != nil {
			select {
			case <-c.Done():
			default:
				return c, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ready:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Live returns the live connection, or nil while there is none (dialing,
// or running OnConnect): for work that should not wait for a switch that
// is away.
func (cl *Client) Live() *Conn {
	cl.mu.Lock()
	c := cl.cur
	cl.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.Done():
		return nil
	default:
		return c
	}
}

// Do runs fn with a live connection, retrying once on a new connection if
// the one it got died underneath it.
func (cl *Client) Do(ctx context.Context, fn func(*Conn) error) error {
	for attempt := 0; ; attempt++ {
		c, err := cl.Conn(ctx)
		if err != nil {
			return err
		}
		err = fn(c)
		if err == nil || !errors.Is(err, ErrClosed) || attempt > 0 {
			return err
		}
	}
}
