package windows

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/Microsoft/hcsshim/hcn"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

const (
	nsA = "8d9a3c2e-1111-4e5f-9a0b-0123456789ab"
	nsB = "8d9a3c2e-2222-4e5f-9a0b-0123456789ab"
)

func podNet(container, netns string) platform.PodNetwork {
	return platform.PodNetwork{
		PodRef:   platform.PodRef{Namespace: "default", Name: "web-0", ContainerID: container, IfName: "eth0", NetNS: netns},
		IPs:      []netip.Prefix{netip.MustParsePrefix("10.244.1.5/24")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.244.1.1")},
		MTU:      1450,
	}
}

// setUpNode returns a node after Setup, its log taken.
func setUpNode(t *testing.T) (*host, *Backend) {
	t.Helper()
	h := freshNode()
	b := h.backend(t)
	if _, err := b.Setup(context.Background(), nodeCfg); err != nil {
		t.Fatal(err)
	}
	h.Take()
	h.hns.namespaces[nsA], h.hns.namespaces[nsB] = true, true
	return h, b
}

func TestAttach(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	pod := podNet("c1", nsA)
	iface, err := b.Attach(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
hns CreateEndpoint net-1 {"Name":"seine_default_web-0_c1_eth0","HostComputeNetwork":"net-1","Policies":[{"Type":"PortName","Settings":{"Name":"web-0-5181cd"}},{"Type":"EncapOverhead","Settings":{"Overhead":50}}],"IpConfigurations":[{"IpAddress":"10.244.1.5","PrefixLength":24}],"Dns":{},"Routes":[{"NextHop":"10.244.1.1","DestinationPrefix":"0.0.0.0/0"}],"Health":{"Extra":{}},"SchemaVersion":{"Major":2,"Minor":0}} -> ep-2
hns AttachEndpoint `+nsA+` ep-2`)
	want := platform.PodInterface{HostName: PortName(pod.PodRef), PortType: ovsdb.TypeInternal,
		MAC: net.HardwareAddr{0x00, 0x15, 0x5d, 0, 0, 2}, IPs: pod.IPs, Late: true}
	if iface.HostName != want.HostName || iface.PortType != want.PortType || iface.MAC.String() != want.MAC.String() ||
		len(iface.IPs) != 1 || iface.IPs[0] != want.IPs[0] || !iface.Late {
		t.Errorf("Attach = %+v, want %+v", iface, want)
	}
	if err := b.Check(ctx, pod); err != nil {
		t.Errorf("Check after Attach: %v", err)
	}

	// A retried ADD finds the endpoint right and changes nothing.
	again, err := b.Attach(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of a retried Attach", h.Take(), "")
	if again.MAC.String() != iface.MAC.String() || again.HostName != iface.HostName {
		t.Errorf("retried Attach = %+v, want %+v", again, iface)
	}

	// Another address for the same attachment replaces the endpoint.
	pod.IPs = []netip.Prefix{netip.MustParsePrefix("10.244.1.6/24")}
	if err := b.Check(ctx, pod); err == nil || !strings.Contains(err.Error(), "addresses [10.244.1.5/24], want [10.244.1.6/24]") {
		t.Errorf("Check with another address: %v", err)
	}
	if _, err := b.Attach(ctx, pod); err != nil {
		t.Fatal(err)
	}
	log := h.Take()
	if !strings.HasPrefix(log, "hns DeleteEndpoint ep-2\nhns CreateEndpoint net-1 ") || !strings.HasSuffix(log, "hns AttachEndpoint "+nsA+" ep-3") {
		t.Errorf("replacing Attach:\n%s", log)
	}
	diff(t, "endpoints", h.hns.dumpEndpoints(), "ep-3 seine_default_web-0_c1_eth0 ns="+nsA+" mac=00-15-5D-00-00-03")
}

func TestAttachFixedMACAndRoutes(t *testing.T) {
	h, b := setUpNode(t)
	pod := podNet("c1", "{"+strings.ToUpper(nsA)+"}")
	pod.MAC = net.HardwareAddr{0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05}
	pod.MTU = 0
	pod.Routes = []platform.Route{{Dst: netip.MustParsePrefix("10.96.0.0/12")}}
	iface, err := b.Attach(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
hns CreateEndpoint net-1 {"Name":"seine_default_web-0_c1_eth0","HostComputeNetwork":"net-1","Policies":[{"Type":"PortName","Settings":{"Name":"web-0-5181cd"}}],"IpConfigurations":[{"IpAddress":"10.244.1.5","PrefixLength":24}],"Dns":{},"Routes":[{"NextHop":"10.244.1.1","DestinationPrefix":"10.96.0.0/12"}],"MacAddress":"0A-58-0A-F4-01-05","Health":{"Extra":{}},"SchemaVersion":{"Major":2,"Minor":0}} -> ep-2
hns AttachEndpoint `+strings.ToUpper(nsA)+` ep-2`)
	if iface.MAC.String() != pod.MAC.String() {
		t.Errorf("MAC %s, want %s", iface.MAC, pod.MAC)
	}
	if err := b.Check(context.Background(), pod); err != nil {
		t.Errorf("Check (namespace GUID in braces and upper case): %v", err)
	}
}

func TestAttachFailureLeavesNoEndpoint(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, fail, netns, want string
	}{
		{"namespace refuses the endpoint", "AttachEndpoint", nsA, "attach HNS endpoint seine_default_web-0_c1_eth0 to namespace " + nsA + ": boom"},
		{"namespace does not exist", "", "8d9a3c2e-9999-4e5f-9a0b-0123456789ab", "HNS namespace 8d9a3c2e-9999-4e5f-9a0b-0123456789ab: no such pod network namespace"},
		{"HNS refuses the endpoint", "CreateEndpoint", nsA, "create HNS endpoint seine_default_web-0_c1_eth0: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, b := setUpNode(t)
			if tc.fail != "" {
				h.FailNext(tc.fail, errors.New("boom"))
			}
			_, err := b.Attach(ctx, podNet("c1", tc.netns))
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
				t.Errorf("Attach: %v, want %q", err, tc.want)
			}
			if tc.fail == "" && !errors.Is(err, platform.ErrNoNetNS) {
				t.Errorf("Attach into a missing namespace: %v, want ErrNoNetNS", err)
			}
			if d := h.hns.dumpEndpoints(); d != "" {
				t.Errorf("endpoints left after a failed Attach:\n%s", d)
			}
		})
	}
	t.Run("not a namespace GUID", func(t *testing.T) {
		h, b := setUpNode(t)
		_, err := b.Attach(ctx, podNet("c1", "/var/run/netns/x"))
		if err == nil || !strings.Contains(err.Error(), "want an HNS namespace GUID") || !errors.Is(err, platform.ErrNoNetNS) {
			t.Errorf("Attach: %v", err)
		}
		diff(t, "host calls", h.Take(), "")
	})
	t.Run("before node setup", func(t *testing.T) {
		h := freshNode()
		_, err := h.backend(t).Attach(ctx, podNet("c1", nsA))
		if err == nil || !strings.Contains(err.Error(), "HNS network seine does not exist") {
			t.Errorf("Attach: %v", err)
		}
	})
}

func TestStaleEndpoints(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	// Sandbox c0 of the pod crashed: its namespace is gone, its endpoint
	// stayed. Sandbox c9 of the same pod still runs (a second sandbox
	// during a restart), and another pod's endpoint is not Seine's concern.
	h.hns.endpoints = []hcn.HostComputeEndpoint{
		{Id: "old", Name: "seine_default_web-0_c0_eth0", HostComputeNetwork: "net-1", HostComputeNamespace: "8d9a3c2e-0000-4e5f-9a0b-0123456789ab"},
		{Id: "live", Name: "seine_default_web-0_c9_eth0", HostComputeNetwork: "net-1", HostComputeNamespace: nsB},
		{Id: "other", Name: "seine_default_web-1_c0_eth0", HostComputeNetwork: "net-1"},
		{Id: "foreign", Name: "web-0_c0", HostComputeNetwork: "net-1"},
	}
	if _, err := b.Attach(ctx, podNet("c1", nsA)); err != nil {
		t.Fatal(err)
	}
	log := h.Take()
	if !strings.HasPrefix(log, "hns DeleteEndpoint old\nhns CreateEndpoint ") {
		t.Errorf("Attach did not delete the stale endpoint first:\n%s", log)
	}
	diff(t, "endpoints", h.hns.dumpEndpoints(), `
live seine_default_web-0_c9_eth0 ns=`+nsB+` mac=
other seine_default_web-1_c0_eth0 ns= mac=
foreign web-0_c0 ns= mac=
ep-2 seine_default_web-0_c1_eth0 ns=`+nsA+` mac=00-15-5D-00-00-02`)

	// The live sandbox's namespace goes away; Detach of c1 cleans it up too.
	delete(h.hns.namespaces, nsB)
	if err := b.Detach(ctx, podNet("c1", nsA).PodRef); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of Detach", h.Take(), "hns DeleteEndpoint ep-2\nhns DeleteEndpoint live")
	diff(t, "endpoints after Detach", h.hns.dumpEndpoints(), `
other seine_default_web-1_c0_eth0 ns= mac=
foreign web-0_c0 ns= mac=`)
}

func TestAttachAfterCrashBeforeNamespace(t *testing.T) {
	// The agent died between creating the endpoint and attaching it to the
	// namespace; the runtime retries ADD.
	ctx := context.Background()
	h, b := setUpNode(t)
	h.FailNext("AttachEndpoint", errors.New("agent killed"))
	b.hns = noDelete{b.hns} // the crash: no clean-up ran
	if _, err := b.Attach(ctx, podNet("c1", nsA)); err == nil {
		t.Fatal("Attach succeeded")
	}
	h.Take()
	b = h.backend(t) // restarted agent
	if _, err := b.Attach(ctx, podNet("c1", nsA)); err != nil {
		t.Fatal(err)
	}
	log := h.Take()
	if !strings.HasPrefix(log, "hns DeleteEndpoint ep-2\nhns CreateEndpoint") || !strings.HasSuffix(log, "hns AttachEndpoint "+nsA+" ep-3") {
		t.Errorf("retried ADD:\n%s", log)
	}
	diff(t, "endpoints", h.hns.dumpEndpoints(), "ep-3 seine_default_web-0_c1_eth0 ns="+nsA+" mac=00-15-5D-00-00-03")
}

// noDelete loses DeleteEndpoint calls, as a process killed before them would.
type noDelete struct{ hnsAPI }

func (noDelete) DeleteEndpoint(context.Context, string) error { return errors.New("killed") }

func TestDetach(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	pod := podNet("c1", nsA)
	if _, err := b.Attach(ctx, pod); err != nil {
		t.Fatal(err)
	}
	h.Take()
	// The namespace is gone by the time DEL comes; the endpoint still goes.
	delete(h.hns.namespaces, nsA)
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), "hns DeleteEndpoint ep-2")
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	diff(t, "host calls of the second Detach", h.Take(), "")
	if err := b.Check(ctx, pod); err == nil || !strings.Contains(err.Error(), "no HNS endpoint seine_default_web-0_c1_eth0") {
		t.Errorf("Check after Detach: %v", err)
	}

	t.Run("no network", func(t *testing.T) {
		h := freshNode()
		if err := h.backend(t).Detach(ctx, pod.PodRef); err != nil {
			t.Errorf("Detach without an HNS network: %v", err)
		}
		diff(t, "host calls", h.Take(), "")
	})
	t.Run("HNS fails", func(t *testing.T) {
		h, b := setUpNode(t)
		h.FailNext("Endpoints", errors.New("HNS is restarting"))
		if err := b.Detach(ctx, pod.PodRef); err == nil || !strings.Contains(err.Error(), "HNS is restarting") {
			t.Errorf("Detach: %v", err)
		}
	})
	t.Run("invalid reference", func(t *testing.T) {
		if err := b.Detach(ctx, platform.PodRef{Name: "x"}); err == nil {
			t.Error("Detach of an empty reference succeeded")
		}
	})
}

func TestCheckReportsDifferences(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	pod := podNet("c1", nsA)
	if _, err := b.Attach(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// Something else changed the endpoint and the namespace went away.
	h.hns.endpoints[0].MacAddress = "00-15-5D-99-99-99"
	h.hns.endpoints[0].Policies = []hcn.EndpointPolicy{{Type: hcn.PortName, Settings: []byte(`{"Name":"other"}`)}}
	delete(h.hns.namespaces, nsA)
	pod.MAC = net.HardwareAddr{0x00, 0x15, 0x5d, 0, 0, 2}
	err := b.Check(ctx, pod)
	if err == nil {
		t.Fatal("Check found nothing")
	}
	for _, want := range []string{
		"MAC 00-15-5D-99-99-99, want 00-15-5D-00-00-02",
		`switch port "other", want "web-0-5181cd"`,
		"HNS namespace " + nsA + " is gone",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v\nwant it to say %q", err, want)
		}
	}
	diff(t, "host calls of Check", h.Take(), `
hns CreateEndpoint net-1 {"Name":"seine_default_web-0_c1_eth0","HostComputeNetwork":"net-1","Policies":[{"Type":"PortName","Settings":{"Name":"web-0-5181cd"}},{"Type":"EncapOverhead","Settings":{"Overhead":50}}],"IpConfigurations":[{"IpAddress":"10.244.1.5","PrefixLength":24}],"Dns":{},"Routes":[{"NextHop":"10.244.1.1","DestinationPrefix":"0.0.0.0/0"}],"Health":{"Extra":{}},"SchemaVersion":{"Major":2,"Minor":0}} -> ep-2
hns AttachEndpoint `+nsA+` ep-2`)
}

func TestNames(t *testing.T) {
	ref := platform.PodRef{Namespace: "kube-system", Name: "coredns-5d78c9869d-abcde", ContainerID: "0123456789abcdef", IfName: "eth0"}
	name := PortName(ref)
	if len(name) > 15 || !strings.HasPrefix(name, "coredns-") {
		t.Errorf("PortName = %q", name)
	}
	other := ref
	other.ContainerID = "fedcba9876543210"
	if PortName(other) == name {
		t.Error("two sandboxes of one pod share a port name")
	}
	got, ok := parseEndpointName(EndpointName(ref))
	if !ok || got != ref {
		t.Errorf("parseEndpointName(EndpointName(%v)) = %v, %v", ref, got, ok)
	}
	for _, bad := range []string{"web-0_c0", "seine_a_b_c", "seine__b_c_d"} {
		if _, ok := parseEndpointName(bad); ok {
			t.Errorf("parseEndpointName(%q) accepted", bad)
		}
	}
}

// TestPodInterfaceReady: an attached endpoint's interface is not ready until
// the runtime starts the sandbox (its vNIC appears in the container's
// compartment); a deleted endpoint is an error.
func TestPodInterfaceReady(t *testing.T) {
	ctx := context.Background()
	h, b := setUpNode(t)
	pod := podNet("c1", nsA)
	iface, err := b.Attach(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if !iface.Late {
		t.Error("Attach did not say the interface comes late")
	}
	h.Take()
	if ready, err := b.PodInterfaceReady(ctx, pod.PodRef, iface); err != nil || ready {
		t.Errorf("before the sandbox started: ready %v, %v; want false", ready, err)
	}
	h.stack.sandboxStarted(iface.MAC.String())
	if ready, err := b.PodInterfaceReady(ctx, pod.PodRef, iface); err != nil || !ready {
		t.Errorf("after the sandbox started: ready %v, %v; want true", ready, err)
	}
	diff(t, "host calls of PodInterfaceReady", h.Take(), "")
	if err := b.Detach(ctx, pod.PodRef); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PodInterfaceReady(ctx, pod.PodRef, iface); err == nil || !strings.Contains(err.Error(), "no HNS endpoint") {
		t.Errorf("after Detach: %v, want no HNS endpoint", err)
	}
}
