package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/ipam"
)

// nodeLeftovers describes the pod state left on a node beyond the pods
// named in keep (container IDs): OVS pod ports, veths other than the uplink,
// pod flows, pod netns mounts, IPAM allocations. "" means clean.
func (e *env) nodeLeftovers(t *testing.T, node string, keepPorts int) string {
	t.Helper()
	var b strings.Builder
	d := e.ovs(node)
	ports, err := d.Vsctl(e.ctx, "list-ports", "br-int")
	if err != nil {
		t.Fatal(err)
	}
	var podPorts []string
	for _, p := range strings.Fields(ports) {
		if !slices.Contains([]string{"eth0", "seine-gw0", "seine-tun0"}, p) {
			podPorts = append(podPorts, p)
		}
	}
	if len(podPorts) != keepPorts {
		fmt.Fprintf(&b, "%d pod ports (want %d): %v\n", len(podPorts), keepPorts, podPorts)
	}
	links, err := inNS(e.ctx, e.c.NetNSPath(node), "ip", "-o", "link", "show", "type", "veth")
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, links)
	}
	var veths []string
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			if name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]; name != "eth0" {
				veths = append(veths, name)
			}
		}
	}
	if len(veths) != keepPorts {
		fmt.Fprintf(&b, "%d pod veths (want %d): %v\n", len(veths), keepPorts, veths)
	}
	// Category 3 (pod) in bits 40..47 of the cookie.
	flows, err := d.Ofctl(e.ctx, "-O", "OpenFlow15", "dump-flows", "br-int", "cookie=0x30000000000/0xff0000000000")
	if err != nil {
		t.Fatal(err)
	}
	if keepPorts == 0 && strings.Contains(flows, "cookie=") {
		fmt.Fprintf(&b, "pod flows:\n%s\n", flows)
	}
	if keepPorts == 0 {
		if ents, _ := os.ReadDir(e.c.NodePodNetNSDir(node)); len(ents) > 0 {
			fmt.Fprintf(&b, "%d pod network namespaces left\n", len(ents))
		}
	}
	if n := e.ipamAllocations(t, node); n != keepPorts {
		fmt.Fprintf(&b, "%d IPAM allocations (want %d)\n", n, keepPorts)
	}
	return b.String()
}

// ipamAllocations counts the node's IPAM allocations, read from a copy of
// its state so the running agent's files are not touched.
func (e *env) ipamAllocations(t *testing.T, node string) int {
	t.Helper()
	src := filepath.Join(e.c.NodeSeineDir(node), "ipam", "state.json")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := e.cs.CoreV1().Nodes().Get(e.ctx, node, metav1GetOptions)
	if err != nil {
		t.Fatal(err)
	}
	al, err := ipam.Open(ipam.Options{Dir: dir, PodCIDRs: prefixes(t, n.Spec.PodCIDRs)})
	if err != nil {
		t.Fatal(err)
	}
	return len(al.List())
}
