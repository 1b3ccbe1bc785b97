package policy_test

// NetworkPolicy on a real node: test/agenttest's in-process agent on a
// private netdev OVS, pods made through the real seine-cni, real TCP, UDP
// and ICMP between their network namespaces, policies handed to the
// agent's policy controller as the controlplane watch would.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/lab/probe"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

type testPod struct {
	name, netns string
	ip          netip.Addr
}

// addPod creates a pod through the CNI and serves probe answers on ports
// (TCP and UDP) inside it; everything is removed in cleanup.
func addPod(t testing.TB, n *agenttest.Node, name string, ports ...corev1.ContainerPort) testPod {
	t.Helper()
	ctx := context.Background()
	nsPath := ovsdaemon.NewNetNS(t)
	rt := &libcni.RuntimeConf{
		ContainerID: "policy-test-" + name, NetNS: nsPath, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}},
	}
	r, err := n.CNI.AddNetworkList(ctx, n.Config, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := n.CNI.DelNetworkList(context.Background(), n.Config, rt); err != nil {
			t.Errorf("DEL %s: %v", name, err)
		}
	})
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	stop, err := probe.Serve(ctx, nsPath, name, ports)
	if err != nil {
		t.Fatalf("serve in %s: %v", name, err)
	}
	t.Cleanup(stop)
	return testPod{name: name, netns: nsPath, ip: ip}
}

func tcpPort(p int32) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: p, Protocol: corev1.ProtocolTCP}
}

func udpPort(p int32) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: p, Protocol: corev1.ProtocolUDP}
}

// wantAllowed probes dst from src and wants dst's answer.
func wantAllowed(t *testing.T, src, dst testPod, proto string, port int) {
	t.Helper()
	addr := fmt.Sprintf("%s:%d", dst.ip, port)
	reply, err := probe.Probe(context.Background(), src.netns, proto, addr, 5*time.Second)
	if err != nil || reply != dst.name {
		t.Errorf("%s -> %s %s/%d: want %q, got %q, %v", src.name, dst.name, proto, port, dst.name, reply, err)
	}
}

// wantDenied probes dst from src and wants silence that the policy made:
// a timeout (never a reset or an ICMP error) whose packets src's egress or
// dst's ingress isolation drop flow counted.
func wantDenied(t *testing.T, n *agenttest.Node, src, dst testPod, proto string, port int) {
	t.Helper()
	before := isolationDrops(t, n)
	addr := fmt.Sprintf("%s:%d", dst.ip, port)
	reply, err := probe.Probe(context.Background(), src.netns, proto, addr, 1500*time.Millisecond)
	if !errors.Is(err, probe.ErrTimeout) {
		t.Errorf("%s -> %s %s/%d: want a timeout (dropped), got %q, %v", src.name, dst.name, proto, port, reply, err)
		return
	}
	if ok, why := policyDropped(before, isolationDrops(t, n), src, dst); !ok {
		t.Errorf("%s -> %s %s/%d timed out, but not by the policy: %s", src.name, dst.name, proto, port, why)
	}
}

func member(p testPod) controlplane.GroupMember {
	return controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: "default", Name: p.name},
		IPs: []controlplane.IPAddress{p.ip.AsSlice()}, NodeName: "node-1"}
}

func svc(proto controlplane.Protocol, port int32) controlplane.Service {
	p := intstr.FromInt32(port)
	return controlplane.Service{Protocol: proto, Port: &p}
}

// dbState: db isolated both ways; ingress from clients on TCP 5432 and
// UDP 53; no egress at all.
func dbState(gen int64, db testPod, clients ...testPod) policy.State {
	var ms []controlplane.GroupMember
	for _, c := range clients {
		ms = append(ms, member(c))
	}
	return policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": {ObjectMeta: metav1.ObjectMeta{Name: "db"}, Members: []controlplane.GroupMember{member(db)}}},
		AddressGroups:   map[string]*controlplane.AddressGroup{"clients": {ObjectMeta: metav1.ObjectMeta{Name: "clients"}, Members: ms}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"db": {
			ObjectMeta:      metav1.ObjectMeta{Name: "db", UID: types.UID("uid-db"), Generation: gen},
			AppliedToGroups: []string{"db"},
			PolicyTypes:     []controlplane.PolicyType{controlplane.PolicyTypeIngress, controlplane.PolicyTypeEgress},
			Rules: []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn,
				From:     controlplane.NetworkPolicyPeer{AddressGroups: []string{"clients"}},
				Services: []controlplane.Service{svc(controlplane.ProtocolTCP, 5432), svc(controlplane.ProtocolUDP, 53)}}},
		}},
	}
}

func TestPolicyOnRealNode(t *testing.T) {
	n := agenttest.Start(t)
	ctx := context.Background()
	pc := n.Agent.Policy()
	db := addPod(t, n, "db-0", tcpPort(5432), tcpPort(22), udpPort(53))
	web := addPod(t, n, "web-0", tcpPort(80))
	other := addPod(t, n, "other-0", tcpPort(80))

	// No policy: everything is open.
	wantAllowed(t, web, db, "tcp", 5432)
	wantAllowed(t, other, db, "tcp", 22)
	wantAllowed(t, db, web, "tcp", 80)

	if err := pc.Sync(ctx, dbState(1, db, web)); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if got := pc.Realized(); got["db"] != 1 {
		t.Errorf("realized %v", got)
	}
	t.Run("ingress", func(t *testing.T) {
		wantAllowed(t, web, db, "tcp", 5432)
		wantAllowed(t, web, db, "udp", 53)
		wantDenied(t, n, web, db, "tcp", 22)     // port not allowed
		wantDenied(t, n, other, db, "tcp", 5432) // peer not allowed
		wantDenied(t, n, other, db, "udp", 53)
	})
	t.Run("egress and established replies", func(t *testing.T) {
		// db may open nothing, yet its replies to web's connections pass
		// (the allowed probes above and here read db's answer).
		wantDenied(t, n, db, web, "tcp", 80)
		wantAllowed(t, web, db, "tcp", 5432)
		// Pods the policy does not select are unaffected.
		wantAllowed(t, web, other, "tcp", 80)
	})
	t.Run("member added and removed", func(t *testing.T) {
		if err := pc.Sync(ctx, dbState(2, db, web, other)); err != nil {
			t.Fatal(err)
		}
		wantAllowed(t, other, db, "tcp", 5432)
		if err := pc.Sync(ctx, dbState(3, db, web)); err != nil {
			t.Fatal(err)
		}
		wantDenied(t, n, other, db, "tcp", 5432)
		if got := pc.Realized(); got["db"] != 3 {
			t.Errorf("realized %v", got)
		}
	})
	t.Run("policy deleted", func(t *testing.T) {
		if err := pc.Sync(ctx, policy.State{}); err != nil {
			t.Fatal(err)
		}
		wantAllowed(t, other, db, "tcp", 22)
		wantAllowed(t, db, web, "tcp", 80)
		if flows, _ := n.OVS.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int", "table=80"); strings.Contains(flows, "conjunction") {
			t.Errorf("policy flows left:\n%s", flows)
		}
	})
	t.Run("named port, port range, ipBlock except", func(t *testing.T) {
		// db accepts, from the node's pod CIDR except web-0: its named port
		// "pg" (5432 in its AppliedToGroup entry) and TCP 20-23.
		end := int32(23)
		rng := svc(controlplane.ProtocolTCP, 20)
		rng.EndPort = &end
		pg := intstr.FromString("pg")
		dbm := member(db)
		dbm.NamedPorts = []controlplane.NamedPort{{Name: "pg", Port: 5432, Protocol: controlplane.ProtocolTCP}}
		webNet := controlplane.IPNet{IP: web.ip.AsSlice(), PrefixLength: 32}
		podNet := netip.PrefixFrom(db.ip, 24).Masked()
		s := policy.State{
			AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": {ObjectMeta: metav1.ObjectMeta{Name: "db"}, Members: []controlplane.GroupMember{dbm}}},
			NetworkPolicies: map[string]*controlplane.NetworkPolicy{"db-ports": {
				ObjectMeta:      metav1.ObjectMeta{Name: "db-ports", UID: types.UID("uid-db-ports"), Generation: 1},
				AppliedToGroups: []string{"db"},
				PolicyTypes:     []controlplane.PolicyType{controlplane.PolicyTypeIngress},
				Rules: []controlplane.NetworkPolicyRule{{Direction: controlplane.DirectionIn,
					From: controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{{
						CIDR:   controlplane.IPNet{IP: podNet.Addr().AsSlice(), PrefixLength: int32(podNet.Bits())},
						Except: []controlplane.IPNet{webNet}}}},
					Services: []controlplane.Service{{Protocol: controlplane.ProtocolTCP, Port: &pg}, rng}}},
			}},
		}
		if err := pc.Sync(ctx, s); err != nil {
			t.Fatal(err)
		}
		wantAllowed(t, other, db, "tcp", 5432) // the named port
		wantAllowed(t, other, db, "tcp", 22)   // inside the range
		wantDenied(t, n, web, db, "tcp", 5432) // the except
		wantDenied(t, n, other, db, "udp", 53) // no such service
		if err := pc.Sync(ctx, policy.State{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("pod added to an applied-to group", func(t *testing.T) {
		// The policy names a pod that does not exist yet; creating it
		// isolates it before the CNI ADD returns.
		s := dbState(4, testPod{name: "late-0"}, web)
		if err := pc.Sync(ctx, s); err != nil {
			t.Fatal(err)
		}
		late := addPod(t, n, "late-0", tcpPort(5432), tcpPort(22))
		wantAllowed(t, web, late, "tcp", 5432)
		wantDenied(t, n, web, late, "tcp", 22)
		if err := pc.Sync(ctx, policy.State{}); err != nil {
			t.Fatal(err)
		}
	})
}

var pingStatsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// pingSeqRE is one reply line of ping(8).
var pingSeqRE = regexp.MustCompile(`bytes from .* icmp_seq=(\d+)`)

// pingGaps lists the echo requests ping sent before its last answered one
// that got no reply. Requests after it were still in flight when ping was
// stopped (after the part of the test that matters).
func pingGaps(out string) (answered int, missing []int) {
	seen := map[int]bool{}
	last := 0
	for _, m := range pingSeqRE.FindAllStringSubmatch(out, -1) {
		seq := atoi(m[1])
		seen[seq] = true
		last = max(last, seq)
	}
	for seq := 1; seq <= last; seq++ {
		if !seen[seq] {
			missing = append(missing, seq)
		}
	}
	return len(seen), missing
}

// While policies are re-synced 50 times, each time swapping the policy
// that allows web -> db for another one (all of the old allow flows go and
// new ones come), a steady ping from web to db loses nothing: every change
// is one atomic bundle.
func TestPolicyResyncUnderTraffic(t *testing.T) {
	n := agenttest.Start(t)
	ctx := context.Background()
	pc := n.Agent.Policy()
	db := addPod(t, n, "db-0", tcpPort(5432), udpPort(53))
	web := addPod(t, n, "web-0", tcpPort(80))
	// Every datapath flow exact: each new connection below is translated
	// against the flow tables as they are at that moment, so a change that
	// passed through a state without the allow would drop some of them.
	if out, err := n.OVS.Appctl(ctx, "ovs-vswitchd", "upcall/disable-megaflows"); err != nil {
		t.Fatalf("disable megaflows: %v\n%s", err, out)
	}
	state := func(name string, gen int64) policy.State {
		s := dbState(gen, db, web)
		np := s.NetworkPolicies["db"]
		np.Name, np.UID = name, types.UID("uid-"+name)
		np.Rules[0].Services = nil // every protocol, ICMP included
		return policy.State{AppliedToGroups: s.AppliedToGroups, AddressGroups: s.AddressGroups,
			NetworkPolicies: map[string]*controlplane.NetworkPolicy{name: np}}
	}
	if err := pc.Sync(ctx, state("a", 1)); err != nil {
		t.Fatal(err)
	}
	wantAllowed(t, web, db, "tcp", 5432)

	pingCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ping := exec.CommandContext(pingCtx, "nsenter", "--net="+web.netns, "--", "ping", "-n", "-i", "0.01", "-W", "1", db.ip.String())
	out := &lockedBuffer{}
	ping.Stdout = out
	ping.Cancel = func() error { return ping.Process.Signal(os.Interrupt) } // ping prints its statistics on SIGINT
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor := func(min int64) {
		for deadline := time.Now().Add(10 * time.Second); countReplies(out.String()) < min; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("ping got fewer than %d replies:\n%s", min, out.String())
			}
		}
	}
	waitFor(5)
	// Alongside the ping, new UDP "connections" (fresh source ports) one
	// after the other.
	stopUDP := make(chan struct{})
	udpDone := make(chan [2]int)
	go func() {
		sent, lost := 0, 0
		for {
			select {
			case <-stopUDP:
				udpDone <- [2]int{sent, lost}
				return
			default:
			}
			sent++
			// A dropped datagram is never answered; a slow machine only
			// makes the answer late.
			if _, err := probe.Probe(ctx, web.netns, "udp", db.ip.String()+":53", 5*time.Second); err != nil {
				lost++
			}
		}
	}()
	// Every OpenFlow message the switch receives goes to its log from
	// here on (none dropped by vlog's rate limit), so the bundles can be
	// counted.
	logPath := filepath.Join(n.OVS.Dir(), "log", "ovs-vswitchd.log")
	logStart := fileSize(t, logPath)
	for _, args := range [][]string{{"vlog/disable-rate-limit", "vconn"}, {"vlog/set", "vconn:file:dbg"}} {
		if out, err := n.OVS.Appctl(ctx, "ovs-vswitchd", args...); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, out)
		}
	}
	start := time.Now()
	for i := range 50 {
		name := "a"
		if i%2 == 0 {
			name = "b"
		}
		if err := pc.Sync(ctx, state(name, int64(i+2))); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		// Spread the syncs over the ping stream (pacing, not waiting).
		time.Sleep(15 * time.Millisecond)
	}
	elapsed := time.Since(start)
	// ovs-vswitchd writes its log asynchronously: a request logged after
	// the last bundle marks where its messages end, once it shows.
	const marker = "reg9=0x5e1e5e1e" // a match no flow has
	if out, err := n.OVS.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", "br-int", marker); err != nil {
		t.Fatalf("dump-flows: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"vlog/set", "vconn:file:info"}, {"vlog/enable-rate-limit", "vconn"}} {
		if out, err := n.OVS.Appctl(ctx, "ovs-vswitchd", args...); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, out)
		}
	}
	commits, flowMods := countMessages(t, logPath, logStart, marker)
	t.Logf("the switch received %d bundle commits and %d flow-mods outside bundles", commits, flowMods)
	if commits != 50 || flowMods != 0 {
		t.Errorf("50 policy changes made %d bundle commits and %d bare flow-mods; want 50 and 0", commits, flowMods)
	}
	close(stopUDP)
	udp := <-udpDone
	t.Logf("UDP: %d new flows, %d unanswered", udp[0], udp[1])
	if udp[1] > 0 {
		t.Errorf("%d of %d new UDP flows from web to db went unanswered while policies were re-synced", udp[1], udp[0])
	}
	waitFor(countReplies(out.String()) + 5)
	cancel()
	_ = ping.Wait()
	m := pingStatsRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no ping statistics:\n%s", out.String())
	}
	answered, missing := pingGaps(out.String())
	t.Logf("50 re-syncs in %v; ping %s sent, %s received; %d answered before the last reply", elapsed, m[1], m[2], answered)
	if len(missing) > 0 {
		t.Errorf("ping lost %d requests (icmp_seq %v) while policies were re-synced:\n%s", len(missing), missing, lastLines(out.String(), 5))
	}
	// And the swaps really were enforced: other traffic to db is denied,
	// by db's isolation drop flow, while the same new pod reaches web, which
	// no policy isolates (its network works: the silence is the policy's).
	other := addPod(t, n, "other-0")
	wantAllowed(t, other, web, "tcp", 80)
	wantDenied(t, n, other, db, "tcp", 5432)
	wantAllowed(t, other, web, "tcp", 80)
}

var replyRE = regexp.MustCompile(`bytes from`)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// countMessages counts, in the vswitchd log between offset and the
// message holding marker (waited for: the log is written asynchronously),
// the bundle commits and the flow-mods received outside a bundle.
func countMessages(t *testing.T, path string, offset int64, marker string) (commits, flowMods int) {
	t.Helper()
	var b []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		b = b[offset:]
		if i := strings.Index(string(b), marker); i >= 0 {
			b = b[:i]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vswitchd log never showed the request with %s:\n%s", marker, lastLines(string(b), 20))
		}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "|vconn|") && strings.Contains(l, "due to excessive rate") {
			t.Fatalf("vlog dropped vconn messages, they cannot be counted: %s", l)
		}
	}
	// With its rate limit on, vlog keeps 600 messages a minute of vconn.
	t.Logf("%d vconn messages logged", strings.Count(string(b), "|vconn|DBG|"))
	// A message's details continue on the lines after "received: ".
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		switch {
		case strings.Contains(l, "received: OFPT_BUNDLE_CONTROL") && i+1 < len(lines) && strings.Contains(lines[i+1], "type=COMMIT_REQUEST"):
			commits++
		case strings.Contains(l, "received: OFPT_FLOW_MOD"):
			flowMods++
		}
	}
	return commits, flowMods
}

func countReplies(s string) int64 { return int64(len(replyRE.FindAllStringIndex(s, -1))) }

func atoi(s string) int {
	v, _ := strconv.Atoi(s)
	return v
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// BenchmarkSyncMemberChange is the time from Sync to realized (installed
// and the datapath revalidated) for one member joining or leaving a
// 500-member AddressGroup of a policy over one local pod, on a real node.
func BenchmarkSyncMemberChange(b *testing.B) {
	n := agenttest.Start(b)
	ctx := context.Background()
	pc := n.Agent.Policy()
	nsPath := ovsdaemon.NewNetNS(b)
	rt := &libcni.RuntimeConf{ContainerID: "policy-bench-db", NetNS: nsPath, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "db-0"}}}
	r, err := n.CNI.AddNetworkList(ctx, n.Config, rt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.CNI.DelNetworkList(context.Background(), n.Config, rt) })
	res, err := current.NewResultFromResult(r)
	if err != nil {
		b.Fatal(err)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	db := testPod{name: "db-0", netns: nsPath, ip: ip}
	var clients []testPod
	for i := range 500 {
		clients = append(clients, testPod{name: fmt.Sprintf("c-%d", i), ip: netip.AddrFrom4([4]byte{10, 244, byte(2 + i/250), byte(1 + i%250)})})
	}
	full, less := dbState(1, db, clients...), dbState(2, db, clients[1:]...)
	if err := pc.Sync(ctx, full); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		s := less
		if i%2 == 1 {
			s = full
		}
		if err := pc.Sync(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}
