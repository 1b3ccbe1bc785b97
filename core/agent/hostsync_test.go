package agent

import (
	"strings"
	"testing"
	"time"
)

// TestHostRulesReasserted: a host rule removed behind the agent's back
// comes back with the periodic resync, with no Node event; one the backend
// reports removed comes back at once, long before the period.
func TestHostRulesReasserted(t *testing.T) {
	const route = "route 10.244.2.0/24 via 10.244.2.1 dev seine-gw0 onlink"
	const snat = "snat 10.244.1.0/24 to 172.30.0.11 except 10.244.1.0/24 and 10.244.2.0/24 and out seine-gw0"
	has := func(w *world, rule string) func() (bool, string) {
		return func() (bool, string) {
			d := w.backend.FakeHostRules.Dump()
			return strings.Contains(d, rule+"\n"), d
		}
	}

	t.Run("periodic", func(t *testing.T) {
		w := newWorld(t, twoNodesSlice()...)
		w.hostResync = 200 * time.Millisecond
		w.backend.FakeHostRules.NoWatch = true // as iptables: no notifications
		a, _ := w.start()
		waitReady(t, a)
		poll(t, "SNAT rule", has(w, snat))
		removed := time.Now()
		if !w.backend.FakeHostRules.Tamper(snat, false) {
			t.Fatalf("no rule %q to remove:\n%s", snat, w.backend.FakeHostRules.Dump())
		}
		poll(t, "SNAT rule back", has(w, snat))
		t.Logf("SNAT rule back %v after it was removed (resync period %v)", time.Since(removed).Round(time.Millisecond), w.hostResync)
		if l := w.backend.FakeHostRules.Log(); !strings.Contains(l, "Sync: +"+snat) {
			t.Errorf("no Sync re-added the rule:\n%s", l)
		}
	})

	t.Run("notified", func(t *testing.T) {
		w := newWorld(t, twoNodesSlice()...)
		w.hostResync = time.Hour
		a, _ := w.start()
		waitReady(t, a)
		poll(t, "peer route", has(w, route))
		// The watcher registers when the agent starts its loop; a removal
		// the watcher cannot have heard of is retried until it is heard.
		deadline := time.Now().Add(5 * time.Second)
		for {
			w.backend.FakeHostRules.Tamper(route, true)
			ok, _ := has(w, route)()
			for end := time.Now().Add(time.Second); !ok && time.Now().Before(end); ok, _ = has(w, route)() {
				time.Sleep(5 * time.Millisecond)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the route did not come back after a reported removal:\n%s", w.backend.FakeHostRules.Log())
			}
		}
	})
}
