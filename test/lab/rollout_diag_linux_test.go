package lab

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// stampedLine is a line of output and when it reached the test.
type stampedLine struct {
	at   time.Time
	text string
}

// stampedOutput is an io.Writer keeping each line with the time it
// arrived: a pinger's replies stream through kubectl exec as they come,
// so a lost ping's time is known to within the stream's delay, and a gap
// can be set beside the agents' and Open vSwitch's logs.
type stampedOutput struct {
	mu    sync.Mutex
	lines []stampedLine
	part  []byte
}

func (s *stampedOutput) Write(p []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.part = append(s.part, p...)
	for {
		i := slices.Index(s.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		s.lines = append(s.lines, stampedLine{now, string(s.part[:i])})
		s.part = s.part[i+1:]
	}
}

// String is the whole output.
func (s *stampedOutput) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.lines {
		b.WriteString(l.text + "\n")
	}
	b.Write(s.part)
	return b.String()
}

// replyAt is when the reply to ping seq arrived, or false.
func (s *stampedOutput) replyAt(seq int) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := fmt.Sprintf("seq=%d ", seq)
	for _, l := range s.lines {
		if strings.Contains(l.text, want) {
			return l.at, true
		}
	}
	return time.Time{}, false
}

// podLogs gathers containers' logs with the runtime's timestamps: follow
// streams a pod's log until the container ends (an agent replaced by a
// rollout, whose log goes with its pod), read takes what a pod has logged
// so far.
type podLogs struct {
	cs kubernetes.Interface
	mu sync.Mutex
	// lines are "<RFC 3339 time> <pod>/<container>: <line>".
	lines []string
	wg    sync.WaitGroup
}

func (l *podLogs) add(pod, container string, sc *bufio.Scanner) {
	for sc.Scan() {
		ts, rest, _ := strings.Cut(sc.Text(), " ")
		l.mu.Lock()
		l.lines = append(l.lines, ts+" "+pod+"/"+container+": "+rest)
		l.mu.Unlock()
	}
}

func (l *podLogs) follow(ctx context.Context, p corev1.Pod, container string) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		rc, err := l.cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, Follow: true, Timestamps: true}).Stream(ctx)
		if err != nil {
			l.mu.Lock()
			l.lines = append(l.lines, time.Now().UTC().Format(time.RFC3339Nano)+" "+p.Name+"/"+container+": (logs: "+err.Error()+")")
			l.mu.Unlock()
			return
		}
		defer rc.Close()
		l.add(p.Name, container, bufio.NewScanner(rc))
	}()
}

func (l *podLogs) read(ctx context.Context, p corev1.Pod, container string) {
	b, err := l.cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, Timestamps: true}).DoRaw(ctx)
	if err != nil {
		b = []byte(time.Now().UTC().Format(time.RFC3339Nano) + " (logs: " + err.Error() + ")")
	}
	l.add(p.Name, container, bufio.NewScanner(strings.NewReader(string(b))))
}

// between returns the lines logged from from to to, in time order (the
// followed streams are cut off first: ctx's end).
func (l *podLogs) between(from, to time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var in []string
	for _, line := range l.lines {
		ts, _, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !at.Before(from) && !at.After(to) {
			in = append(in, line)
		}
	}
	slices.Sort(in)
	return strings.Join(in, "\n")
}

// gapReport sets the longest run of lost pings beside the logs: when the
// last reply before it and the first after it arrived, and what the agents
// and Open vSwitch logged from a second before to a second after.
func gapReport(out *stampedOutput, lost []int, logs *podLogs) string {
	if len(lost) == 0 {
		return ""
	}
	bestFirst, n := longestRun(lost)
	bestLast := bestFirst + n - 1
	before, okB := out.replyAt(bestFirst - 1)
	after, okA := out.replyAt(bestLast + 1)
	switch {
	case !okB && !okA:
		return fmt.Sprintf("pings %d-%d lost; no reply around them to place them in time", bestFirst, bestLast)
	case !okB:
		before = after.Add(-time.Duration(bestLast-bestFirst+2) * 10 * time.Millisecond)
	case !okA:
		after = before.Add(time.Duration(bestLast-bestFirst+2) * 10 * time.Millisecond)
	}
	return fmt.Sprintf("pings %d-%d lost: the reply before them reached the test at %s, the one after at %s (%s later); logs from a second before to a second after:\n%s",
		bestFirst, bestLast, before.UTC().Format(time.RFC3339Nano), after.UTC().Format(time.RFC3339Nano), after.Sub(before).Round(time.Millisecond),
		logs.between(before.Add(-time.Second), after.Add(time.Second)))
}

// TestGapReport: the longest run of lost pings is placed between the
// arrival of the replies around it, and the logs of that window (a second
// either side) are printed in time order, the others left out.
func TestGapReport(t *testing.T) {
	var out stampedOutput
	t0 := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	for _, seq := range []int{0, 1, 3, 4, 9, 10} {
		out.mu.Lock()
		out.lines = append(out.lines, stampedLine{t0.Add(time.Duration(seq) * 10 * time.Millisecond), "64 bytes from 10.0.1.2: seq=" + strconv.Itoa(seq) + " ttl=64 time=0.3 ms"})
		out.mu.Unlock()
	}
	if _, err := out.Write([]byte("64 bytes from 10.0.1.2: seq=11 ttl=64\npart")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "\n"); got != 7 || !strings.HasSuffix(out.String(), "part") {
		t.Errorf("output: %q", out.String())
	}
	logs := &podLogs{}
	logs.add("seine-agent-b", "seine-agent", bufio.NewScanner(strings.NewReader(
		"2026-12-07T18:00:00.060000000Z msg=\"flows replayed\"\n"+
			"2026-12-07T17:59:58.000000000Z msg=\"too early\"\n")))
	logs.add("seine-ovs-a", "ovs", bufio.NewScanner(strings.NewReader("2026-12-07T18:00:00.050000000Z bridge|INFO|port added\n")))
	got := gapReport(&out, missingSeqs(out.String(), 12), logs)
	for _, want := range []string{
		"pings 5-8 lost: the reply before them reached the test at 2026-12-07T18:00:00.04Z, the one after at 2026-12-07T18:00:00.09Z (50ms later)",
		"2026-12-07T18:00:00.050000000Z seine-ovs-a/ovs: bridge|INFO|port added\n2026-12-07T18:00:00.060000000Z seine-agent-b/seine-agent: msg=\"flows replayed\"",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "too early") {
		t.Errorf("report holds a line from outside the window:\n%s", got)
	}
}
