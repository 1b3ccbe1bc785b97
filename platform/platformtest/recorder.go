// Package platformtest has in-memory fakes of the platform interfaces for
// tests of the core. Each fake records what it was asked, one line per call,
// as readable text (Log), and renders its current state (Dump), so a test
// compares text in a table instead of programming a mock. Calls that change
// nothing are logged with "(no change)", which is how idempotency shows.
//
// Fakes validate their input like a backend would (the platform types'
// Validate methods) and can be told to fail the next call of a method
// (FailNext).
package platformtest

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// recorder is the call log and fault table shared by the fakes.
type recorder struct {
	mu     sync.Mutex
	log    []string
	faults map[string]error
}

// logf appends one line; the caller holds mu.
func (r *recorder) logf(format string, args ...any) {
	r.log = append(r.log, fmt.Sprintf(format, args...))
}

// fault returns and clears the injected error for method; the caller holds mu.
func (r *recorder) fault(method string) error {
	err := r.faults[method]
	delete(r.faults, method)
	return err
}

// FailNext makes the next call of method (e.g. "Attach", "EnsurePort") fail
// with err, after logging it as failed.
func (r *recorder) FailNext(method string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.faults == nil {
		r.faults = map[string]error{}
	}
	r.faults[method] = err
}

// Log returns the calls so far, one per line.
func (r *recorder) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, "\n")
}

// ResetLog forgets the calls so far (state is kept).
func (r *recorder) ResetLog() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = nil
}

// fakeMAC derives a stable, locally administered unicast MAC from name.
func fakeMAC(name string) net.HardwareAddr {
	h := sha256.Sum256([]byte(name))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func sortedMap(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + m[k])
	}
	b.WriteByte('}')
	return b.String()
}
