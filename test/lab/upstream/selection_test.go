package upstream

import (
	"os"
	"slices"
	"strings"
	"testing"
)

const sample = `# header of the file, not a reason: a blank line follows

# Conformance of SIG Network.
focus \[sig-network\].*\[Conformance\]
focus \[Feature:NetworkPolicy\]

# No SCTP in this kernel.
skip SCTP

# Not a cloud.
skip \[Provider:

# Seine's proxy has no health check node port yet.
known health check node port
`

func TestSelectionDecidesAsGinkgoWould(t *testing.T) {
	sel, err := ParseSelection(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		text string
		runs bool
		why  string
	}{
		{"[sig-network] Services should serve a basic endpoint from pods [Conformance]", true, ""},
		{"[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]", true, ""},
		{"[sig-network] Netpol NetworkPolicy between server and client using SCTP should enforce policy based on Ports [Feature:NetworkPolicy]", false, "No SCTP in this kernel."},
		{"[sig-network] DNS should provide DNS for the cluster [Provider:GCE] [Conformance]", false, "Not a cloud."},
		{"[sig-storage] Volumes should store data [Conformance]", false, "not selected"},
		{"[sig-network] Services should be able to up and down services", false, "not selected"},
	} {
		runs, why := sel.Decide(c.text)
		if runs != c.runs || why != c.why {
			t.Errorf("Decide(%q) = %v, %q; want %v, %q", c.text, runs, why, c.runs, c.why)
		}
	}
	if got := sel.KnownCause("[sig-network] Services should fail health check node port if there are only terminating endpoints"); got != "Seine's proxy has no health check node port yet." {
		t.Errorf("KnownCause = %q", got)
	}
	if got := sel.KnownCause("[sig-network] Services should serve a basic endpoint from pods [Conformance]"); got != "" {
		t.Errorf("KnownCause of a spec no known rule names = %q", got)
	}
	want := []string{
		`--ginkgo.focus=\[sig-network\].*\[Conformance\]`,
		`--ginkgo.focus=\[Feature:NetworkPolicy\]`,
		`--ginkgo.skip=SCTP`,
		`--ginkgo.skip=\[Provider:`,
	}
	if got := sel.Args(); !slices.Equal(got, want) {
		t.Errorf("Args() = %q, want %q", got, want)
	}
}

func TestSelectionRefusesWhatItCannotRead(t *testing.T) {
	for name, text := range map[string]string{
		"skip without a reason":  "focus a\nskip b\n",
		"known without a reason": "focus a\n\nknown b\n",
		"unknown keyword":        "# why\nfocuss a\n",
		"bad regex":              "focus [unclosed\n",
		"no regex":               "focus\n",
		"no focus":               "# why\nskip b\n",
		"reason cut by a blank":  "focus a\n# why\n\nskip b\n",
	} {
		if _, err := ParseSelection(strings.NewReader(text)); err == nil {
			t.Errorf("%s: ParseSelection accepted %q", name, text)
		}
	}
}

// The selection the lab runs parses, every skip has its reason, and the
// specs the issue names are selected (the texts are upstream's, v1.37.2).
func TestTheLabsSelection(t *testing.T) {
	f, err := os.Open("../../e2e/upstream/selection.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sel, err := ParseSelection(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{
		"[sig-network] Services should serve a basic endpoint from pods [Conformance]",
		"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]",
		"[sig-network] DNS should provide DNS for services [Conformance]",
		"[sig-network] Netpol NetworkPolicy between server and client should deny egress from all pods in a namespace [Feature:NetworkPolicy]",
		"[sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should enforce policy based on Ports [Feature:NetworkPolicy]",
		"[sig-network] Netpol API should support creating NetworkPolicy API operations",
		"[sig-network] Services should allow pods to hairpin back to themselves through services",
		"[sig-network] Services should preserve source pod IP for traffic thru service cluster IP [LinuxOnly]",
		"[sig-network] Services should be rejected when no endpoints exist",
		"[sig-network] Services should have session affinity timeout work for service with type clusterIP [LinuxOnly]",
		"[sig-network] Services should fallback to terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Cluster",
		"[sig-network] Conntrack should be able to preserve UDP traffic when server pod cycles for a ClusterIP service",
		"[sig-network] Networking Granular Checks: Services should function for node-Service: udp",
		// SCTP in a policy, probed over TCP: no SCTP kernel module needed.
		"[sig-network] Netpol NetworkPolicy between server and client should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP [Feature:NetworkPolicy]",
	} {
		if runs, why := sel.Decide(text); !runs {
			t.Errorf("%q does not run: %s", text, why)
		}
	}
	for _, text := range []string{
		"[sig-network] Netpol NetworkPolicy between server and client using SCTP should support a 'default-deny-ingress' policy [Feature:NetworkPolicy] [Feature:SCTPConnectivity] [LinuxOnly]",
		"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: sctp [LinuxOnly] [Feature:SCTPConnectivity]",
		"[sig-network] Services should allow creating a basic SCTP service with pod and endpoints [LinuxOnly] [Serial]",
		"[sig-network] Services should work after restarting apiserver [Disruptive]",
		"[sig-network] LoadBalancers [Feature:LoadBalancer] should be able to change the type and ports of a TCP service [Slow]",
		"[sig-network] Networking should provide Internet connection for containers [Feature:Networking-IPv4]",
		"[sig-network] [Feature:IPv6DualStack] should function for pod-Service: http",
		"[sig-network] DNS should provide DNS for the cluster [Provider:GCE]",
	} {
		if runs, _ := sel.Decide(text); runs {
			t.Errorf("%q runs; the selection should skip it", text)
		}
	}
}

// A partial run (E2E_FOCUS) keeps the selection's skips: an SCTP spec
// stays skipped however the focus is written.
func TestWithFocusKeepsTheSkips(t *testing.T) {
	sel, err := ParseSelection(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	part, err := sel.WithFocus(`Netpol`)
	if err != nil {
		t.Fatal(err)
	}
	if runs, _ := part.Decide("[sig-network] Netpol NetworkPolicy between server and client should support allow-all policy [Feature:NetworkPolicy]"); !runs {
		t.Error("the partial focus does not select a Netpol spec")
	}
	if runs, why := part.Decide("[sig-network] Netpol NetworkPolicy between server and client using SCTP should enforce policy based on Ports [Feature:NetworkPolicy]"); runs || why != "No SCTP in this kernel." {
		t.Errorf("SCTP spec under a partial focus: runs %v, %q", runs, why)
	}
	if runs, _ := part.Decide("[sig-network] Services should serve a basic endpoint from pods [Conformance]"); runs {
		t.Error("the partial focus still selects what the file's focus rules did")
	}
	want := []string{"--ginkgo.focus=Netpol", `--ginkgo.skip=SCTP`, `--ginkgo.skip=\[Provider:`}
	if got := part.Args(); !slices.Equal(got, want) {
		t.Errorf("Args() = %q, want %q", got, want)
	}
	if _, err := sel.WithFocus("[unclosed"); err == nil {
		t.Error("WithFocus accepted a bad regex")
	}
}
