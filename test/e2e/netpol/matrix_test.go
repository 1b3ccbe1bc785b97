package netpol

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podRef names one of the suite's pods, "x/a".
type podRef struct{ ns, name string }

func (p podRef) String() string { return p.ns + "/" + p.name }

// parsePodRef reads "x/a".
func parsePodRef(s string) podRef {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		panic(fmt.Sprintf("pod reference %q is not namespace/name", s))
	}
	return podRef{ns, name}
}

var (
	namespaceNames = []string{"x", "y", "z"}
	podNames       = []string{"a", "b", "c"}
)

// suitePods lists the nine pods in matrix order: x/a x/b x/c y/a ... z/c.
func suitePods() []podRef {
	var pods []podRef
	for _, ns := range namespaceNames {
		for _, name := range podNames {
			pods = append(pods, podRef{ns, name})
		}
	}
	return pods
}

// target is what a matrix probes: a protocol and a port on every pod.
type target struct {
	proto corev1.Protocol
	port  int32
}

func (t target) String() string { return fmt.Sprintf("%s/%d", t.proto, t.port) }

var (
	tcp80  = target{corev1.ProtocolTCP, 80}
	tcp81  = target{corev1.ProtocolTCP, 81}
	udp80  = target{corev1.ProtocolUDP, 80}
	udp81  = target{corev1.ProtocolUDP, 81}
	sctp80 = target{corev1.ProtocolSCTP, 80}
	sctp81 = target{corev1.ProtocolSCTP, 81}
)

// reach is an expected reachability matrix: allow[i][j] says whether
// pods[i] may reach pods[j]. A pod probing itself is never compared (the
// packets never leave its namespace; upstream ignores loopback too).
type reach struct {
	pods  []podRef
	allow [][]bool
}

// newReach is a matrix where every pair is allowed (or every pair denied).
func newReach(pods []podRef, allow bool) *reach {
	r := &reach{pods: pods, allow: make([][]bool, len(pods))}
	for i := range pods {
		r.allow[i] = make([]bool, len(pods))
		for j := range pods {
			r.allow[i][j] = allow
		}
	}
	return r
}

// set marks every pair from -> to as allowed or denied. Both are patterns
// "ns/pod" where either half may be "*"; "*" alone matches every pod. Later
// calls override earlier ones, so a case reads as "deny all into x/a, then
// allow x/b into x/a".
func (r *reach) set(from, to string, allow bool) *reach {
	n := 0
	for i, f := range r.pods {
		for j, t := range r.pods {
			if matchPod(from, f) && matchPod(to, t) {
				r.allow[i][j] = allow
				n++
			}
		}
	}
	if n == 0 {
		panic(fmt.Sprintf("reach.set(%q, %q) matches no pair", from, to))
	}
	return r
}

func matchPod(pattern string, p podRef) bool {
	if pattern == "*" {
		return true
	}
	ref := parsePodRef(pattern)
	return (ref.ns == "*" || ref.ns == p.ns) && (ref.name == "*" || ref.name == p.name)
}

// verdict is what one probe saw.
type verdict byte

const (
	answered verdict = '.' // the right pod answered
	dropped  verdict = 'X' // nothing came back before the timeout: a drop
	refused  verdict = 'R' // a TCP reset or an ICMP port unreachable: not a drop
	// unreachable: no route, an ICMP host/network unreachable, or the next
	// hop never answered ARP (the packets never left): not a drop either.
	unreachable verdict = 'U'
	wrong       verdict = '?' // another pod answered, or the probe failed otherwise
	self        verdict = '-' // a pod and itself: not probed
)

// cell is one probe's outcome; detail says more for anything but an answer.
type cell struct {
	v      verdict
	detail string
	sent   int // packets a timed-out probe sent (probe.Sent)
	// slow: the probe connected but the listener's answer did not come
	// within the probe's timeout (probe.ErrNoReply). The handshake went
	// through, so nothing dropped it; on a loaded machine the timeout
	// can end between the handshake and the answer.
	slow bool
}

// observed is a measured matrix for one target.
type observed struct {
	pods  []podRef
	cells [][]cell
}

func newObserved(pods []podRef) *observed {
	o := &observed{pods: pods, cells: make([][]cell, len(pods))}
	for i := range pods {
		o.cells[i] = make([]cell, len(pods))
		o.cells[i][i] = cell{v: self}
	}
	return o
}

// good says whether what a probe saw is what the expectation wants: an
// allowed pair must be answered by the right pod, a denied pair must time
// out. A refusal on a denied pair is wrong: deny means DROP.
func good(allow bool, v verdict) bool {
	if allow {
		return v == answered
	}
	return v == dropped
}

// mismatch is one wrong cell.
type mismatch struct {
	from, to podRef
	allow    bool
	got      cell
}

func (m mismatch) String() string {
	want := "dropped (timeout)"
	if m.allow {
		want = "answered"
	}
	return fmt.Sprintf("%s -> %s: want %s, got %s", m.from, m.to, want, describe(m.got))
}

// describe is a cell's verdict and detail for a log line.
func describe(c cell) string {
	v := map[verdict]string{answered: "answered", dropped: "timed out", refused: "refused/reset",
		unreachable: "unreachable", wrong: "wrong answer or error"}[c.v]
	if c.detail != "" {
		v += ": " + c.detail
	}
	return v
}

// diff lists the cells where got differs from r (the diagonal excluded).
func (r *reach) diff(got *observed) []mismatch {
	var out []mismatch
	for i := range r.pods {
		for j := range r.pods {
			if i == j {
				continue
			}
			if c := got.cells[i][j]; !good(r.allow[i][j], c.v) {
				out = append(out, mismatch{from: r.pods[i], to: r.pods[j], allow: r.allow[i][j], got: c})
			}
		}
	}
	return out
}

// allAllowed says whether every pair may talk.
func (r *reach) allAllowed() bool {
	for i := range r.allow {
		for j := range r.allow[i] {
			if i != j && !r.allow[i][j] {
				return false
			}
		}
	}
	return true
}

// cellsCompared is the number of cells a matrix compares (all but the diagonal).
func (r *reach) cellsCompared() int { return len(r.pods) * (len(r.pods) - 1) }

const legend = "rows: from, columns: to; . answered, X timed out (dropped), R refused/reset, U unreachable (no route, ICMP unreachable, ARP unanswered), ? wrong pod or error, - self (not probed); * marks a cell that differs from the expectation"

// render prints the expected and the observed matrix for t, the way
// upstream's truth tables look, with the differing cells starred and listed.
func render(t target, want *reach, got *observed) string {
	var b strings.Builder
	bad := want.diff(got)
	fmt.Fprintf(&b, "%s: %d of %d cells differ\n%s\n", t, len(bad), want.cellsCompared(), legend)
	b.WriteString("expected:\n")
	writeMatrix(&b, want.pods, func(i, j int) (verdict, bool) {
		switch {
		case i == j:
			return self, false
		case want.allow[i][j]:
			return answered, false
		default:
			return dropped, false
		}
	})
	b.WriteString("observed:\n")
	writeMatrix(&b, got.pods, func(i, j int) (verdict, bool) {
		c := got.cells[i][j]
		return c.v, i != j && !good(want.allow[i][j], c.v)
	})
	const maxListed = 12
	for k, m := range bad {
		if k == maxListed {
			fmt.Fprintf(&b, "  ... and %d more\n", len(bad)-maxListed)
			break
		}
		fmt.Fprintf(&b, "  %s\n", m)
	}
	return b.String()
}

// writeMatrix prints one matrix; mark gives a cell's verdict and whether it
// is starred.
func writeMatrix(b *strings.Builder, pods []podRef, mark func(i, j int) (verdict, bool)) {
	fmt.Fprintf(b, "%-4s", "")
	for _, p := range pods {
		fmt.Fprintf(b, "%4s ", p)
	}
	b.WriteString("\n")
	for i, p := range pods {
		fmt.Fprintf(b, "%-4s", p)
		for j := range pods {
			v, star := mark(i, j)
			s := " "
			if star {
				s = "*"
			}
			fmt.Fprintf(b, "%4c%s", v, s)
		}
		b.WriteString("\n")
	}
}
