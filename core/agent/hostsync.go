package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/seine-cni/seine/platform"
)

// hostChangeSettle is how long a reported host change waits before the
// resync, so that a burst of changes (a flushed route table) costs one.
const hostChangeSettle = 100 * time.Millisecond

// keepHostRules re-applies the host rules with the current state every
// resync period, and soon after the backend reports a host change
// (platform.HostRulesWatcher), until ctx ends: a route or NAT rule someone
// else removed comes back without waiting for a Node event. The backend's
// Sync compares with the host, so a resync that finds it right changes
// nothing.
func (a *Agent) keepHostRules(ctx context.Context) {
	due := make(chan struct{}, 1)
	watched := make(chan struct{})
	if w, ok := a.backend.(platform.HostRulesWatcher); ok {
		go func() {
			defer close(watched)
			err := w.WatchHostRules(ctx, func() {
				select {
				case due <- struct{}{}:
				default:
				}
			})
			if err != nil && ctx.Err() == nil {
				a.log.Warn("no host change notifications; host rules are re-applied every resync period", "period", a.hostResync, "err", err)
			}
		}()
	} else {
		close(watched)
	}
	defer func() { <-watched }()
	tick := time.NewTicker(a.hostResync)
	defer tick.Stop()
	for {
		why := "periodic resync"
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-due:
			why = "host changed"
			select {
			case <-ctx.Done():
				return
			case <-time.After(hostChangeSettle):
			}
			select {
			case <-due:
			default:
			}
		}
		if err := a.resyncHost(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("host rules", "err", err, "trigger", why)
		}
	}
}

// resyncHost applies the host state even when it has not changed since the
// last success.
func (a *Agent) resyncHost(ctx context.Context) error {
	return a.syncHostState(ctx, true)
}

// syncHost applies the host state when it changed since the last success.
func (a *Agent) syncHost(ctx context.Context) error {
	return a.syncHostState(ctx, false)
}

func (a *Agent) syncHostState(ctx context.Context, force bool) error {
	hs, nps := a.hostState()
	text := fmt.Sprintf("%+v %+v", hs, nps)
	a.hostMu.Lock()
	defer a.hostMu.Unlock()
	if text == a.lastHost && !force {
		return nil
	}
	if err := a.backend.Sync(ctx, hs); err != nil {
		a.lastHost = ""
		return err
	}
	if err := a.syncNodePorts(ctx, nps); err != nil {
		a.lastHost = ""
		return err
	}
	a.lastHost = text
	return nil
}
