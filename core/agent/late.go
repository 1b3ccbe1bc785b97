package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/seine-cni/seine/core/ipam"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// Pods whose interface appears only after CNI ADD returns
// (platform.PodInterface.Late: Windows under containerd). ADD plugs their
// OVS port without its type and returns; a connector per pod waits for the
// backend to report the interface, gives the port its type, waits for the
// OpenFlow port and installs the pod's flows. DEL stops the connector
// before it tears the pod down.

const (
	lateBackoffMin = 100 * time.Millisecond
	lateBackoffMax = 2 * time.Second
	// lateWarnAfter: a sandbox that has not started by then is logged (the
	// runtime sends DEL when it gives up).
	lateWarnAfter = time.Minute
	// lateOfportWait bounds one wait for ovs-vswitchd to open the port.
	lateOfportWait = 10 * time.Second
)

// errNotYet says the pod's interface does not exist yet.
var errNotYet = errors.New("the pod's interface does not exist yet")

// lateConns are the connectors running.
type lateConns struct {
	mu    sync.Mutex
	ctx   context.Context // the agent's run; nil before Run
	wg    sync.WaitGroup
	conns map[ipam.Key]*lateConn
}

type lateConn struct {
	p      *podState
	cancel context.CancelFunc
	done   chan struct{}
}

// setContext makes ctx (the agent's run) the parent of every connector.
func (l *lateConns) setContext(ctx context.Context) {
	l.mu.Lock()
	l.ctx = ctx
	l.mu.Unlock()
}

// wait returns once every connector has ended; the caller ended their
// context first.
func (l *lateConns) wait() { l.wg.Wait() }

// pending returns the pod waiting for its interface under key, or nil.
func (l *lateConns) pending(key ipam.Key) *podState {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.conns[key]; c != nil {
		return c.p
	}
	return nil
}

// start runs connect for p unless a connector for its key runs already or
// the agent is stopping; it reports whether it started one.
func (l *lateConns) start(p *podState, connect func(context.Context)) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil || l.ctx.Err() != nil || l.conns[p.key] != nil {
		return false
	}
	if l.conns == nil {
		l.conns = map[ipam.Key]*lateConn{}
	}
	ctx, cancel := context.WithCancel(l.ctx)
	c := &lateConn{p: p, cancel: cancel, done: make(chan struct{})}
	l.conns[p.key] = c
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(c.done)
		defer cancel()
		connect(ctx)
		l.mu.Lock()
		if l.conns[p.key] == c {
			delete(l.conns, p.key)
		}
		l.mu.Unlock()
	}()
	return true
}

// stop cancels the connector of key and waits until it has ended (it may
// have connected the pod just before). It returns the pod it was waiting
// for, or nil when there was none.
func (l *lateConns) stop(key ipam.Key) *podState {
	l.mu.Lock()
	c := l.conns[key]
	if c != nil {
		delete(l.conns, key)
	}
	l.mu.Unlock()
	if c == nil {
		return nil
	}
	c.cancel()
	<-c.done
	return c.p
}

// lateBackend returns the backend's LatePodInterfaces capability.
func (a *Agent) lateBackend() (platform.LatePodInterfaces, error) {
	lp, ok := a.backend.(platform.LatePodInterfaces)
	if !ok {
		return nil, fmt.Errorf("backend %T returned a late pod interface but cannot tell when it appears (no platform.LatePodInterfaces)", a.backend)
	}
	return lp, nil
}

// plugLate adds p's OVS port without its interface type (unless the port
// has one already: a retried ADD must not unplug a connected port) and
// starts the connector. It returns the undo of what it did.
func (a *Agent) plugLate(ctx context.Context, p *podState, iface platform.PodInterface) (func(context.Context) error, error) {
	lp, err := a.lateBackend()
	if err != nil {
		return nil, err
	}
	typ := ovsdb.TypeSystem
	if port, err := a.db.GetPort(ctx, iface.HostName); err == nil {
		typ = port.Type
	}
	if err := a.db.EnsurePort(ctx, a.cfg.OVS.Bridge, ovsdb.PortConfig{
		Name: iface.HostName, Type: typ, ExternalIDs: p.externalIDs(),
	}); err != nil {
		return nil, fmt.Errorf("add OVS port %s: %w", iface.HostName, err)
	}
	a.late.start(p, func(ctx context.Context) { a.connectLate(ctx, p, iface, lp) })
	return func(ctx context.Context) error {
		a.late.stop(p.key)
		return a.db.DeletePort(ctx, iface.HostName)
	}, nil
}

// connectLate retries connectLateOnce with a back-off until the pod is
// connected or ctx ends (DEL, agent stop).
func (a *Agent) connectLate(ctx context.Context, p *podState, iface platform.PodInterface, lp platform.LatePodInterfaces) {
	log := a.log.With("pod", p.ref.Namespace+"/"+p.ref.Name, "container", shortID(p.ref.ContainerID), "port", p.port)
	start := time.Now()
	delay, warned, lastErr := lateBackoffMin, false, ""
	for {
		err := a.connectLateOnce(ctx, p, iface, lp)
		if err == nil {
			log.Info("pod connected", "ofport", p.ofport, "waited", time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errNotYet):
			if !warned && time.Since(start) > lateWarnAfter {
				log.Warn("the pod's interface has not appeared yet; still waiting for the runtime to start its sandbox", "waited", time.Since(start).Round(time.Second))
				warned = true
			}
		case err.Error() != lastErr:
			log.Warn("connecting the pod's port failed; retrying", "err", err)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, lateBackoffMax)
	}
}

// connectLateOnce connects the pod if its interface exists now.
func (a *Agent) connectLateOnce(ctx context.Context, p *podState, iface platform.PodInterface, lp platform.LatePodInterfaces) error {
	ready, err := lp.PodInterfaceReady(ctx, p.ref, iface)
	if err != nil {
		return err
	}
	if !ready {
		return errNotYet
	}
	port, err := a.db.GetPort(ctx, p.port)
	if err != nil {
		return fmt.Errorf("OVS port %s: %w", p.port, err)
	}
	if port.Type != iface.PortType || port.OFPort <= 0 {
		if port.Type == iface.PortType && port.OFPort < 0 {
			// ovs-vswitchd opens a device only when its interface row
			// changes: take the type away and give it back.
			if err := a.db.EnsurePort(ctx, a.cfg.OVS.Bridge, ovsdb.PortConfig{Name: p.port, Type: ovsdb.TypeSystem, ExternalIDs: p.externalIDs()}); err != nil {
				return fmt.Errorf("re-plug OVS port %s: %w", p.port, err)
			}
		}
		if err := a.db.EnsurePort(ctx, a.cfg.OVS.Bridge, ovsdb.PortConfig{Name: p.port, Type: iface.PortType, ExternalIDs: p.externalIDs()}); err != nil {
			return fmt.Errorf("give OVS port %s its type %q: %w", p.port, iface.PortType, err)
		}
	}
	octx, cancel := context.WithTimeout(ctx, lateOfportWait)
	ofport, err := a.db.PortOfport(octx, p.port)
	cancel()
	if err != nil {
		return fmt.Errorf("OVS port %s: %w", p.port, err)
	}
	p.ofport = uint32(ofport)
	if err := a.installPodFlows(ctx, p); err != nil {
		return err
	}
	if err := a.policy.PodsChanged(ctx); err != nil {
		// The policy controller retries it; the pod's own flows are in.
		a.log.Error("policy flows of a connected late pod; retrying", "pod", p.key, "err", err)
	}
	return nil
}
