package ipam

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func open(t testing.TB, dir string, cidrs ...string) *Allocator {
	t.Helper()
	a, err := Open(Options{Dir: dir, PodCIDRs: prefixes(cidrs...)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func owner(id string) Owner {
	return Owner{Key: Key{ContainerID: id, IfName: "eth0"}, PodNamespace: "default", PodName: "pod-" + id}
}

func key(id string) Key { return Key{ContainerID: id, IfName: "eth0"} }

// ips renders an allocation's addresses.
func ips(al Allocation) string {
	var s []string
	for _, p := range al.IPs {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func mustAllocate(t testing.TB, a *Allocator, id string) string {
	t.Helper()
	al, err := a.Allocate(owner(id))
	if err != nil {
		t.Fatalf("allocate %s: %v", id, err)
	}
	return ips(al)
}

// dump renders List() as "id=ips" lines.
func dump(a *Allocator) string {
	var lines []string
	for _, al := range a.List() {
		lines = append(lines, al.ContainerID+"="+ips(al))
	}
	return strings.Join(lines, " ")
}

func TestAllocateInOrderAndRotate(t *testing.T) {
	// 10.0.0.0/29: .0 network, .1 gateway, .7 broadcast, .2-.6 for pods.
	a := open(t, t.TempDir(), "10.0.0.0/29")
	if got := a.Gateways(); !slices.Equal(got, prefixes("10.0.0.1/29")) {
		t.Errorf("gateways %v", got)
	}
	steps := []struct {
		op, id string
		want   string // the address, or the error
	}{
		{"alloc", "a", "10.0.0.2/29"},
		{"alloc", "b", "10.0.0.3/29"},
		{"alloc", "c", "10.0.0.4/29"},
		{"alloc", "a", "10.0.0.2/29"}, // retried ADD: same address
		{"release", "b", ""},
		{"release", "b", ""},          // idempotent
		{"release", "never", ""},      // unknown owner
		{"alloc", "d", "10.0.0.5/29"}, // not the .3 just freed
		{"alloc", "e", "10.0.0.6/29"},
		{"alloc", "f", "10.0.0.3/29"}, // wraps around to the free .3
		{"alloc", "g", "exhausted"},
		{"release", "a", ""},
		{"alloc", "g", "10.0.0.2/29"},
	}
	for i, s := range steps {
		switch s.op {
		case "alloc":
			al, err := a.Allocate(owner(s.id))
			got := ips(al)
			if errors.Is(err, ErrExhausted) {
				got = "exhausted"
			} else if err != nil {
				t.Fatalf("step %d: allocate %s: %v", i, s.id, err)
			}
			if got != s.want {
				t.Fatalf("step %d: allocate %s = %s, want %s", i, s.id, got, s.want)
			}
		case "release":
			if err := a.Release(key(s.id)); err != nil {
				t.Fatalf("step %d: release %s: %v", i, s.id, err)
			}
		}
	}
	if got, want := dump(a), "g=10.0.0.2/29 f=10.0.0.3/29 c=10.0.0.4/29 d=10.0.0.5/29 e=10.0.0.6/29"; got != want {
		t.Errorf("List: %s\nwant:  %s", got, want)
	}
	al, ok := a.Lookup(key("d"))
	if !ok || al.PodName != "pod-d" || al.PodNamespace != "default" || ips(al) != "10.0.0.5/29" {
		t.Errorf("Lookup(d) = %+v %v", al, ok)
	}
	if _, ok := a.Lookup(key("a")); ok {
		t.Error("Lookup found a released owner")
	}
}

func TestSmallRanges(t *testing.T) {
	a := open(t, t.TempDir(), "192.168.5.4/30")
	if got := mustAllocate(t, a, "only"); got != "192.168.5.6/30" {
		t.Errorf("/30 allocation %s", got)
	}
	if _, err := a.Allocate(owner("second")); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "192.168.5.4/30") {
		t.Errorf("second /30 allocation: %v", err)
	}
	for _, c := range []string{"192.168.5.4/31", "192.168.5.4/32", "fd00::/127"} {
		if _, err := Open(Options{Dir: t.TempDir(), PodCIDRs: prefixes(c)}); err == nil || !strings.Contains(err.Error(), "too small") {
			t.Errorf("Open with %s: %v", c, err)
		}
	}
	b := open(t, t.TempDir(), "fd00::/126")
	if got := mustAllocate(t, b, "x") + " " + mustAllocate(t, b, "y"); got != "fd00::2/126 fd00::3/126" {
		t.Errorf("/126 allocations %s", got)
	}
	if _, err := b.Allocate(owner("z")); !errors.Is(err, ErrExhausted) {
		t.Errorf("third /126 allocation: %v", err)
	}
}

func TestOpenRejects(t *testing.T) {
	for _, tt := range []struct {
		cidrs []string
		want  string
	}{
		{nil, "one or two"},
		{[]string{"10.0.0.0/24", "fd00::/64", "10.1.0.0/24"}, "one or two"},
		{[]string{"10.0.0.0/24", "10.1.0.0/24"}, "same address family"},
		{[]string{"10.0.0.5/24"}, "host bits"},
	} {
		if _, err := Open(Options{Dir: t.TempDir(), PodCIDRs: prefixes(tt.cidrs...)}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%v): %v, want %q", tt.cidrs, err, tt.want)
		}
	}
	a := open(t, t.TempDir(), "10.0.0.0/24")
	if _, err := a.Allocate(Owner{Key: Key{ContainerID: "c"}}); err == nil {
		t.Error("allocated for an owner without an interface name")
	}
}

func TestDualStack(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.244.1.0/30", "fd00:10:244:1::/64")
	if got := a.Gateways(); !slices.Equal(got, prefixes("10.244.1.1/30", "fd00:10:244:1::1/64")) {
		t.Errorf("gateways %v", got)
	}
	if got := mustAllocate(t, a, "a"); got != "10.244.1.2/30,fd00:10:244:1::2/64" {
		t.Errorf("dual-stack allocation %s", got)
	}
	// IPv4 is full: the IPv6 address must not be taken either.
	if _, err := a.Allocate(owner("b")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocation with IPv4 full: %v", err)
	}
	if got := dump(a); got != "a=10.244.1.2/30,fd00:10:244:1::2/64" {
		t.Errorf("after a failed allocation: %s", got)
	}
	if err := a.Release(key("a")); err != nil {
		t.Fatal(err)
	}
	// The failed attempt did not move the IPv6 cursor.
	if got := mustAllocate(t, a, "b"); got != "10.244.1.2/30,fd00:10:244:1::3/64" {
		t.Errorf("allocation after release %s", got)
	}
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/29", "fd00::/120")
	for _, id := range []string{"a", "b", "c"} {
		mustAllocate(t, a, id)
	}
	if err := a.Release(key("c")); err != nil {
		t.Fatal(err)
	}
	before := dump(a)
	// The agent "crashes": a is dropped without any shutdown.
	b := open(t, dir, "10.0.0.0/29", "fd00::/120")
	if got := dump(b); got != before {
		t.Fatalf("after reopen: %s\nwant: %s", got, before)
	}
	if got := mustAllocate(t, b, "a"); got != "10.0.0.2/29,fd00::2/120" {
		t.Errorf("retried ADD after restart got %s", got)
	}
	// Rotation survives the restart: c's released .4 is not reused next.
	if got := mustAllocate(t, b, "d"); got != "10.0.0.5/29,fd00::5/120" {
		t.Errorf("first allocation after restart %s", got)
	}
	// The CIDR order in the configuration does not matter.
	c := open(t, dir, "fd00::/120", "10.0.0.0/29")
	if got := mustAllocate(t, c, "e"); got != "fd00::6/120,10.0.0.6/29" {
		t.Errorf("allocation with the CIDRs swapped %s", got)
	}
}

// TestOwnerNetNSKept: the pod's namespace is recorded with its allocation
// and read back after a restart; a state file of an older agent, without
// it, still loads.
func TestOwnerNetNSKept(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/24")
	o := owner("a")
	o.NetNS = "/var/run/netns/cni-1234"
	if _, err := a.Allocate(o); err != nil {
		t.Fatal(err)
	}
	b := open(t, dir, "10.0.0.0/24")
	if al, ok := b.Lookup(key("a")); !ok || al.NetNS != o.NetNS || al.PodName != "pod-a" {
		t.Errorf("after reopen: %+v, %v; want netns %s", al, ok, o.NetNS)
	}
	old := `{"version":1,"podCIDRs":["10.0.0.0/24"],"cursors":["10.0.0.2"],"allocations":[{"containerID":"x","ifName":"eth0","podNamespace":"default","podName":"p","ips":["10.0.0.2"]}]}`
	olddir := t.TempDir()
	if err := os.WriteFile(filepath.Join(olddir, "state.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, olddir, "10.0.0.0/24")
	if al, ok := c.Lookup(key("x")); !ok || al.NetNS != "" || ips(al) != "10.0.0.2/24" {
		t.Errorf("an older agent's allocation: %+v, %v", al, ok)
	}
}

func TestTornTempFileIgnored(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/24")
	mustAllocate(t, a, "a")
	// A crash between creating the temp file and renaming it leaves a torn
	// temp file beside the intact state file.
	torn := filepath.Join(dir, tempPrefix+"123456")
	if err := os.WriteFile(torn, []byte(`{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"contai`), 0o600); err != nil {
		t.Fatal(err)
	}
	b := open(t, dir, "10.0.0.0/24")
	if got := dump(b); got != "a=10.0.0.2/24" {
		t.Errorf("after reopen: %s", got)
	}
	if _, err := os.Stat(torn); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("torn temp file not removed: %v", err)
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ipam")
	a := open(t, dir, "10.0.0.0/24")
	mustAllocate(t, a, "a")
	// Running as root, permissions would not stop the write: take the
	// directory away instead.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(owner("b")); err == nil {
		t.Fatal("allocation succeeded without a place to persist it")
	}
	if err := a.Release(key("a")); err == nil {
		t.Fatal("release succeeded without a place to persist it")
	}
	if got := dump(a); got != "a=10.0.0.2/24" {
		t.Errorf("after failed writes: %s", got)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := mustAllocate(t, a, "b"); got != "10.0.0.3/24" {
		t.Errorf("allocation once writable again: %s", got)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":         `{"version":1,`,
		"wrong version":    `{"version":7}`,
		"duplicate IP":     `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"containerID":"a","ifName":"eth0","ips":["10.0.0.2"]},{"containerID":"b","ifName":"eth0","ips":["10.0.0.2"]}]}`,
		"duplicate owner":  `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"containerID":"a","ifName":"eth0","ips":["10.0.0.2"]},{"containerID":"a","ifName":"eth0","ips":["10.0.0.3"]}]}`,
		"outside CIDR":     `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"containerID":"a","ifName":"eth0","ips":["10.9.0.2"]}]}`,
		"gateway given":    `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"containerID":"a","ifName":"eth0","ips":["10.0.0.1"]}]}`,
		"bad address":      `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"containerID":"a","ifName":"eth0","ips":["ten"]}]}`,
		"no container":     `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"ifName":"eth0","ips":["10.0.0.2"]}]}`,
		"two in one range": `{"version":1,"podCIDRs":["10.0.0.0/24"],"allocations":[{"containerID":"a","ifName":"eth0","ips":["10.0.0.2","10.0.0.3"]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(Options{Dir: dir, PodCIDRs: prefixes("10.0.0.0/24")})
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open: %v, want ErrCorrupt", err)
			}
			// Even a reset does not paper over corruption.
			if _, err := Open(Options{Dir: dir, PodCIDRs: prefixes("10.0.0.0/24"), ResetOnCIDRChange: true}); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open with reset: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestCIDRChange(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.244.1.0/24", "fd00:1::/64")
	mustAllocate(t, a, "a")

	// Another IPv4 CIDR while a holds an address of the old one: refuse.
	_, err := Open(Options{Dir: dir, PodCIDRs: prefixes("10.244.7.0/24", "fd00:1::/64")})
	var changed *CIDRChangedError
	if !errors.Is(err, ErrCIDRChanged) || !errors.As(err, &changed) {
		t.Fatalf("Open with a new CIDR: %v", err)
	}
	if len(changed.Stale) != 1 || changed.Stale[0].ContainerID != "a" || ips(changed.Stale[0]) != "10.244.1.2/24,fd00:1::2/64" {
		t.Errorf("stale allocations %+v", changed.Stale)
	}
	// Dropping the IPv6 CIDR is a change too.
	if _, err := Open(Options{Dir: dir, PodCIDRs: prefixes("10.244.1.0/24")}); !errors.Is(err, ErrCIDRChanged) {
		t.Errorf("Open without the IPv6 CIDR: %v", err)
	}
	// The state was left alone by the refusals.
	if got := dump(open(t, dir, "10.244.1.0/24", "fd00:1::/64")); got != "a=10.244.1.2/24,fd00:1::2/64" {
		t.Errorf("after refusals: %s", got)
	}

	// With reset the stale allocations are dropped, durably.
	b, err := Open(Options{Dir: dir, PodCIDRs: prefixes("10.244.7.0/24", "fd00:1::/64"), ResetOnCIDRChange: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(b); got != "" {
		t.Errorf("after reset: %s", got)
	}
	c := open(t, dir, "10.244.7.0/24", "fd00:1::/64")
	// The unchanged IPv6 CIDR keeps its rotation: a's ::2 is not reused yet.
	if got := mustAllocate(t, c, "b"); got != "10.244.7.2/24,fd00:1::3/64" {
		t.Errorf("allocation after reset %s", got)
	}

	// A changed CIDR with nothing allocated in it is adopted silently.
	empty := t.TempDir()
	open(t, empty, "10.1.0.0/24")
	if got := mustAllocate(t, open(t, empty, "10.2.0.0/24"), "x"); got != "10.2.0.2/24" {
		t.Errorf("allocation in the adopted CIDR %s", got)
	}
}

func TestAddingIPv6CompletesExistingOwners(t *testing.T) {
	dir := t.TempDir()
	mustAllocate(t, open(t, dir, "10.0.0.0/24"), "a")
	b := open(t, dir, "10.0.0.0/24", "fd00::/64")
	if al, _ := b.Lookup(key("a")); ips(al) != "10.0.0.2/24" {
		t.Errorf("a after adding IPv6: %s", ips(al))
	}
	if got := mustAllocate(t, b, "a"); got != "10.0.0.2/24,fd00::2/64" {
		t.Errorf("retried ADD of a %s", got)
	}
}

func TestReleaseAllExcept(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/24")
	for _, id := range []string{"a", "b", "c", "d"} {
		mustAllocate(t, a, id)
	}
	freed, err := a.ReleaseAllExcept([]Key{key("a"), key("c"), key("unknown")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range freed {
		got = append(got, f.ContainerID+"="+ips(f))
	}
	if !slices.Equal(got, []string{"b=10.0.0.3/24", "d=10.0.0.5/24"}) {
		t.Errorf("freed %v", got)
	}
	if got := dump(open(t, dir, "10.0.0.0/24")); got != "a=10.0.0.2/24 c=10.0.0.4/24" {
		t.Errorf("after reopen: %s", got)
	}
	if freed, err := a.ReleaseAllExcept([]Key{key("a"), key("c")}); err != nil || len(freed) != 0 {
		t.Errorf("second ReleaseAllExcept: %v %v", freed, err)
	}
	if freed, err := a.ReleaseAllExcept(nil); err != nil || len(freed) != 2 || dump(a) != "" {
		t.Errorf("ReleaseAllExcept(nil): %v %v, left %q", freed, err, dump(a))
	}
}

func TestConcurrentAllocationsNeverCollide(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/23", "fd00::/64")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, err := a.Allocate(owner(id)); err != nil {
					errs <- err
					return
				}
				// Churn: release every third one, retry-allocate another.
				if i%3 == 0 {
					if err := a.Release(key(id)); err != nil {
						errs <- err
						return
					}
				} else if _, err := a.Allocate(owner(id)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list := a.List()
	seen := map[netip.Addr]string{}
	for _, al := range list {
		for _, p := range al.IPs {
			if other, dup := seen[p.Addr()]; dup {
				t.Errorf("%s given to %s and %s", p.Addr(), other, al.ContainerID)
			}
			seen[p.Addr()] = al.ContainerID
		}
	}
	if want := workers * (each - (each+2)/3); len(list) != want {
		t.Errorf("%d allocations, want %d", len(list), want)
	}
	if got, want := dump(open(t, dir, "10.0.0.0/23", "fd00::/64")), dump(a); got != want {
		t.Error("reopened state differs from the live one")
	}
}

// TestKilledMidAllocation kills a process allocating in a loop and checks
// that every allocation it reported survives and none is duplicated. The
// helper allocates only when told to, one at a time, so the kill lands in the
// one allocation the test let start and did not see reported: that one may or
// may not survive, every reported one must. (Before the lockstep the helper
// ran ahead into the pipe's buffer while the test stopped reading, and under
// load more than a couple of allocations finished unseen before the kill.)
func TestKilledMidAllocation(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAllocateForever$")
	cmd.Env = append(os.Environ(), "SEINE_IPAM_HELPER_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	const rounds = 60
	reported := map[string]string{}
	sc := bufio.NewScanner(out)
	start := time.Now()
	for len(reported) < rounds {
		if _, err := in.Write([]byte("\n")); err != nil {
			t.Fatalf("telling the helper to allocate: %v", err)
		}
		if !sc.Scan() {
			t.Fatalf("helper stopped after %d allocations: %v", len(reported), sc.Err())
		}
		line, ok := strings.CutPrefix(sc.Text(), "allocated ")
		id, addr, _ := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("helper printed %q", sc.Text())
		}
		reported[id] = addr
	}
	// Let one more allocation start, and kill the helper somewhere in it:
	// after a random wait of up to a round's mean, so that runs hit
	// every part of an allocation (most land after it).
	round := time.Since(start) / rounds
	if _, err := in.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	killAt := rand.N(round)
	time.Sleep(killAt)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	a := open(t, dir, "10.0.0.0/22")
	live := map[string]string{}
	seen := map[string]bool{}
	for _, al := range a.List() {
		live[al.ContainerID] = ips(al)
		if seen[ips(al)] {
			t.Errorf("%s allocated twice", ips(al))
		}
		seen[ips(al)] = true
	}
	for id, addr := range reported {
		if live[id] != addr {
			t.Errorf("%s was told %s but after the kill holds %q", id, addr, live[id])
		}
	}
	// Only the allocation the kill interrupted can be unreported.
	t.Logf("killed %v into allocation c%d (a round took %v): it survived: %t", killAt, rounds, round, live[fmt.Sprintf("c%d", rounds)] != "")
	if extra := len(live) - len(reported); extra < 0 || extra > 1 {
		t.Errorf("%d allocations after the kill, %d reported", len(live), len(reported))
	}
}

// TestHelperAllocateForever is the process TestKilledMidAllocation kills.
func TestHelperAllocateForever(t *testing.T) {
	dir := os.Getenv("SEINE_IPAM_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process for TestKilledMidAllocation, not a test on its own")
	}
	a := open(t, dir, "10.0.0.0/22")
	told := bufio.NewReader(os.Stdin)
	for i := 0; ; i++ {
		if _, err := told.ReadByte(); err != nil {
			t.Fatalf("waiting to be told to allocate: %v", err)
		}
		id := fmt.Sprintf("c%d", i)
		al, err := a.Allocate(owner(id))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("allocated %s %s\n", id, ips(al))
	}
}
