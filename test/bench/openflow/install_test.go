package openflowbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// BenchmarkInstallFlows installs the same N flows through the library (one
// bundle) and through "ovs-ofctl -O OpenFlow15 --bundle add-flows" of the
// same flows rendered as text, each time into a fresh bridge that holds
// only the groups the flows use, alternating which side goes first. Both
// sides connect through the same relay to the bridge's management socket,
// which times each connection from accept to the last reply it carried
// (the bundle commit's): the "wire-ms" metric, connect and handshake
// included for both, ovs-ofctl's process start and text parsing excluded.
// The "process-ms" metric is what a caller waits: the library's Dial,
// bundle and Close in this process, against the ovs-ofctl process from
// exec to exit (start, parse, connect, bundle).
//
//	go test -run '^$' -bench InstallFlows -benchtime 1x ./test/bench/openflow
func BenchmarkInstallFlows(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if testing.Short() {
		sizes = []int{1_000}
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n/1000)+"k", func(b *testing.B) {
			benchInstall(b, n)
		})
	}
}

func benchInstall(b *testing.B, n int) {
	d := ovsdaemon.StartForTest(b)
	ofctl, err := exec.LookPath("ovs-ofctl")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	flows := Flows(n)
	file := filepath.Join(b.TempDir(), "flows.txt")
	var sb strings.Builder
	for _, f := range flows {
		sb.WriteString(strings.NewReplacer(", ", ",").Replace(f.String()))
		sb.WriteByte('\n')
	}
	if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	var groups []openflow.Message
	for _, g := range Groups() {
		groups = append(groups, openflow.AddGroup(g))
	}

	bridges := 0
	// fresh makes a new bridge with the groups, returns its management
	// socket and a function that checks it holds n flows and removes it.
	fresh := func() (mgmt string, done func(who string) error, err error) {
		bridges++
		br := fmt.Sprintf("br%d", bridges)
		if _, err := d.Vsctl(ctx, "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
			"protocols=OpenFlow15", "fail_mode=secure"); err != nil {
			return "", nil, err
		}
		mgmt = d.MgmtSocketPath(br)
		c, err := openflow.Dial(ctx, "unix:"+mgmt, openflow.Config{})
		if err != nil {
			return "", nil, err
		}
		if err := c.Bundle(ctx, groups...); err != nil {
			c.Close()
			return "", nil, err
		}
		return mgmt, func(who string) error {
			st, err := c.Aggregate(ctx, openflow.TableAll, 0, 0)
			if err == nil && int(st.FlowCount) != n {
				err = fmt.Errorf("%s installed %d flows, want %d", who, st.FlowCount, n)
			}
			c.Close()
			if _, derr := d.Vsctl(ctx, "--if-exists", "del-br", br); derr != nil {
				err = errors.Join(err, derr)
			}
			return err
		}, nil
	}
	rl := newRelay(b)
	pid, ok := d.Pid("ovs-vswitchd")
	if !ok {
		b.Fatal("ovs-vswitchd is not running")
	}
	// The switch's own CPU time during a run: when it nears the run's wall
	// time, the switch, not the client, is what the run waits for.
	switchCPU := func() (time.Duration, error) { return cpuTime(pid) }
	wire := map[string]wireStats{}

	library := func(int) (benchutil.Sample, error) {
		mgmt, done, err := fresh()
		if err != nil {
			return nil, err
		}
		rl.begin(mgmt)
		cpu0, cerr := switchCPU()
		start := time.Now()
		c, err := openflow.Dial(ctx, "unix:"+rl.path, openflow.Config{})
		if err != nil {
			return nil, errors.Join(err, done("library"))
		}
		err = c.BundleFlows(ctx, openflow.FlowAdd, flows)
		c.Close()
		wall := time.Since(start)
		took, ws, rerr := rl.end()
		cpu1, cerr1 := switchCPU()
		if err := errors.Join(err, rerr, cerr, cerr1, done("library")); err != nil {
			return nil, err
		}
		wire["library"] = ws
		return benchutil.Sample{"wire-ms": ms(took), "process-ms": ms(wall), "vswitchd-cpu-ms": ms(cpu1 - cpu0)}, nil
	}
	ovsOfctl := func(int) (benchutil.Sample, error) {
		mgmt, done, err := fresh()
		if err != nil {
			return nil, err
		}
		rl.begin(mgmt)
		// Not through the node's netns: the socket is a path, and nsenter
		// would add a process to this side's time.
		cmd := exec.CommandContext(ctx, ofctl, "-O", "OpenFlow15", "--bundle", "add-flows", "unix:"+rl.path, file)
		cpu0, cerr := switchCPU()
		start := time.Now()
		out, err := cmd.CombinedOutput()
		wall := time.Since(start)
		if err != nil {
			err = fmt.Errorf("ovs-ofctl: %w\n%s", err, out)
		}
		took, ws, rerr := rl.end()
		cpu1, cerr1 := switchCPU()
		if err := errors.Join(err, rerr, cerr, cerr1, done("ovs-ofctl")); err != nil {
			return nil, err
		}
		wire["ovs-ofctl"] = ws
		return benchutil.Sample{"wire-ms": ms(took), "process-ms": ms(wall), "vswitchd-cpu-ms": ms(cpu1 - cpu0)}, nil
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("install %d flows in one bundle into a fresh bridge", n),
			Metrics: []string{"wire-ms", "process-ms", "vswitchd-cpu-ms"},
			Sides:   []benchutil.Side{{Name: "library", Run: library}, {Name: "ovs-ofctl", Run: ovsOfctl}},
			Rounds:  5,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
		b.Logf("per run: library %d connection(s), %d bytes sent; ovs-ofctl %d connection(s), %d bytes sent",
			wire["library"].conns, wire["library"].sent, wire["ovs-ofctl"].conns, wire["ovs-ofctl"].sent)
		for _, m := range []string{"wire-ms", "process-ms"} {
			b.Logf("%s: library %.0f flows/s, ovs-ofctl %.0f flows/s (medians)", m,
				float64(n)/r.Stats("library", m).Median*1000, float64(n)/r.Stats("ovs-ofctl", m).Median*1000)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTime is the user + system CPU time a process (all its threads) has
// used, from /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100 on
// every Linux architecture Go supports).
func cpuTime(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which ends with the last ')':
	// state is field 3, utime 14, stime 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, i := range []int{14 - 3, 15 - 3} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// relay is a unix socket that forwards connections to a bridge's
// management socket and times them, so both sides of the comparison are
// clocked the same way, from outside: from the first accept of a run to the
// last message the switch sent back on any of its connections (the reply
// that ends the work). ovs-ofctl opens more than one connection for a
// bundle; each is forwarded as it comes.
type relay struct {
	path string
	ln   net.Listener

	mu        sync.Mutex
	idle      *sync.Cond // signalled when a connection ends
	target    string
	conns     int   // connections accepted this run
	sent      int64 // bytes the client sent this run
	active    int
	first     time.Time
	lastReply time.Time
	errs      []error
}

func newRelay(tb testing.TB) *relay {
	tb.Helper()
	dir, err := os.MkdirTemp("", "ofrelay") // short: sockaddr_un holds 107 bytes
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	r := &relay{path: filepath.Join(dir, "s")}
	r.idle = sync.NewCond(&r.mu)
	if r.ln, err = net.Listen("unix", r.path); err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			if r.conns == 0 {
				r.first = time.Now()
			}
			r.conns++
			r.active++
			target := r.target
			r.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				last, sent, err := serve(c, target)
				r.mu.Lock()
				r.sent += sent
				if last.After(r.lastReply) {
					r.lastReply = last
				}
				if err != nil {
					r.errs = append(r.errs, err)
				}
				r.active--
				r.idle.Broadcast()
				r.mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() { r.ln.Close(); wg.Wait() })
	return r
}

// begin starts a run whose connections go to target.
func (r *relay) begin(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target, r.conns, r.sent, r.first, r.lastReply, r.errs = target, 0, 0, time.Time{}, time.Time{}, nil
}

// end waits until the run's connections have all closed (the client is
// done, so they are closing) and returns the time from the first accept to
// the last reply, and what the run looked like on the wire.
func (r *relay) end() (time.Duration, wireStats, error) {
	deadline := time.AfterFunc(time.Minute, func() {
		r.mu.Lock()
		r.errs = append(r.errs, errors.New("relay: connections still open a minute after the client finished"))
		r.idle.Broadcast()
		r.mu.Unlock()
	})
	defer deadline.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.active > 0 && len(r.errs) == 0 {
		r.idle.Wait()
	}
	ws := wireStats{conns: r.conns, sent: r.sent}
	if err := errors.Join(r.errs...); err != nil {
		return 0, ws, err
	}
	if r.conns == 0 || r.lastReply.IsZero() {
		return 0, ws, errors.New("relay: the client made no connection, or the switch sent nothing")
	}
	return r.lastReply.Sub(r.first), ws, nil
}

// wireStats is what a run looked like on the wire: how many connections
// the client opened and how many bytes it sent.
type wireStats struct {
	conns int
	sent  int64
}

// serve forwards one connection both ways until the client is done, and
// returns when the switch last sent it something.
func serve(client net.Conn, target string) (last time.Time, sent int64, err error) {
	defer client.Close()
	sw, err := net.Dial("unix", target)
	if err != nil {
		return last, 0, fmt.Errorf("relay: %w", err)
	}
	defer sw.Close()
	up := make(chan error, 1)
	go func() {
		n, err := io.Copy(sw, client)
		sent = n
		// The client is done: the switch has nothing more to answer.
		sw.(*net.UnixConn).CloseWrite()
		up <- err
	}()
	buf := make([]byte, 64<<10)
	var downErr error
	for {
		n, err := sw.Read(buf)
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				// The client closed after its last reply; what the switch
				// sends later (nothing, normally) is not the client's.
				break
			}
			last = time.Now()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				downErr = err
			}
			break
		}
	}
	client.Close()
	if err := <-up; err != nil && !errors.Is(err, net.ErrClosed) {
		return last, sent, fmt.Errorf("relay: client to switch: %w", err)
	}
	if downErr != nil && !errors.Is(downErr, net.ErrClosed) {
		return last, sent, fmt.Errorf("relay: switch to client: %w", downErr)
	}
	return last, sent, nil
}
