package windows

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/windows"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/windows/internal/winapi"
)

var _ platform.HostRulesWatcher = (*Backend)(nil)

// WatchHostRules reports route deletions and changes on the host
// (platform.HostRulesWatcher), so a route of Seine's someone deleted, or
// that went with an interface, comes back at once. WinNAT has no
// notifications: a removed instance comes back with the periodic resync
// (see natMaxAge).
func (b *Backend) WatchHostRules(ctx context.Context, changed func()) error {
	if err := b.stack.WatchRoutes(ctx, changed); err != nil {
		return fmt.Errorf("watch host routes: %w", err)
	}
	return nil
}

// routeWatchers dispatches NotifyRouteChange2's callback, which is made once
// per process (windows.NewCallback's are never freed), to the watcher its
// caller context names.
var routeWatchers struct {
	once     sync.Once
	callback uintptr
	mu       sync.Mutex
	next     uintptr
	fns      map[uintptr]func()
}

// routeChanged is the callback: it runs on a thread of the IP Helper
// service's pool and only calls the (non-blocking) watcher for deletions
// and changes; additions are Seine's own Sync, or harmless.
func routeChanged(callerContext, _ /* row */, notificationType uintptr) uintptr {
	if notificationType != winapi.MibDeleteInstance && notificationType != winapi.MibParameterNotification {
		return 0
	}
	routeWatchers.mu.Lock()
	fn := routeWatchers.fns[callerContext]
	routeWatchers.mu.Unlock()
	if fn != nil {
		fn()
	}
	return 0
}

// WatchRoutes calls changed for every route deleted or changed on the host
// (NotifyRouteChange2, both families) until ctx ends. A stack without the
// function (Wine 8) is an error wrapping platform.ErrNotSupported.
func (iphlpapi) WatchRoutes(ctx context.Context, changed func()) error {
	routeWatchers.once.Do(func() {
		routeWatchers.callback = windows.NewCallback(routeChanged)
		routeWatchers.fns = map[uintptr]func(){}
	})
	routeWatchers.mu.Lock()
	routeWatchers.next++
	id := routeWatchers.next
	routeWatchers.fns[id] = changed
	routeWatchers.mu.Unlock()
	defer func() {
		routeWatchers.mu.Lock()
		delete(routeWatchers.fns, id)
		routeWatchers.mu.Unlock()
	}()
	var h windows.Handle
	if err := winapi.NotifyRouteChange2(windows.AF_UNSPEC, routeWatchers.callback, id, false, &h); err != nil {
		var missing *windows.DLLError
		if errors.As(err, &missing) || errors.Is(err, windows.ERROR_NOT_SUPPORTED) || errors.Is(err, windows.ERROR_CALL_NOT_IMPLEMENTED) {
			return fmt.Errorf("NotifyRouteChange2: %w (%w)", err, platform.ErrNotSupported)
		}
		return fmt.Errorf("NotifyRouteChange2: %w", err)
	}
	<-ctx.Done()
	// It returns once no callback runs any more.
	if err := winapi.CancelMibChangeNotify2(h); err != nil {
		return fmt.Errorf("CancelMibChangeNotify2: %w", err)
	}
	return nil
}
