package agent

import (
	"context"
	"strconv"
	"strings"

	"github.com/seine-cni/seine/ovs/ovsdb"
)

// ovsDefect is a defect of an OVS release that changes what Seine's
// pipeline does on a node, and the releases that fixed it.
type ovsDefect struct {
	id       string
	datapath ovsdb.DatapathType
	// fixed holds, per release branch (major.minor), the first patch
	// release with the fix; releases of branches after the last listed
	// have it, releases of earlier branches do not.
	fixed []ovsRelease
	what  string
}

type ovsRelease struct{ major, minor, patch int }

// The known defects, by name (OVSDefectAffects).
const (
	OVSDefectNATPortReuse     = "nat-port-reuse"
	OVSDefectSCTPWithoutPorts = "sctp-without-ports"
)

// ovsDefects are the known ones. Each comes with what an operator sees,
// the upstream fix, and what to run instead.
var ovsDefects = []ovsDefect{{
	// Measured with OVS 3.1.0 (Debian bookworm): one client pod making
	// sequential connections to a Service whose server closes first
	// stalls after 14,000-22,000 connections (see core/proxy/README.md).
	// On a SYN that reuses the tuple of a closed connection, the
	// userspace conntrack expires the old entry but leaves its reply
	// tuple (its "nat_conn") in the table until the sweeper runs, so the
	// new connection's DNAT finds its reply tuple taken and moves the
	// client's source port; the server may still hold that port in
	// TIME_WAIT from an earlier connection and its PAWS check drops the
	// SYN. Fixed by "conntrack: Remove nat_conn introducing key
	// directionality" in 2.17.8, 3.0.5, 3.1.3, 3.2.3 and 3.3.0.
	id:       OVSDefectNATPortReuse,
	datapath: ovsdb.DatapathNetdev,
	fixed:    []ovsRelease{{2, 17, 8}, {3, 0, 5}, {3, 1, 3}, {3, 2, 3}},
	what: "the userspace datapath's conntrack moves a client's source port when it reuses the port of a closed " +
		"connection to a Service, and the server may drop the SYN (connections to Services stall under high " +
		"connection rates); fixed in OVS 2.17.8, 3.0.5, 3.1.3, 3.2.3 and 3.3.0",
}, {
	// Found by the NetworkPolicy suite's SCTP accounting (branch
	// netpolsuite, /work notes): before OVS 3.2.0 the userspace conntrack
	// tracks SCTP as an address pair, ports zeroed ("conntrack: Extract
	// l4 information for SCTP" added them). Seine's policy tables let a
	// tracked packet that is not new pass, so once an isolated pod has
	// sent SCTP to a peer, the peer's SCTP to that pod on any port is the
	// entry's reply and is delivered whatever the pod's ingress says,
	// while the entry lives.
	id:       OVSDefectSCTPWithoutPorts,
	datapath: ovsdb.DatapathNetdev,
	fixed:    []ovsRelease{{3, 2, 0}},
	what: "the userspace datapath's conntrack tracks SCTP without ports, so NetworkPolicy does not isolate SCTP " +
		"from a peer the pod has itself sent SCTP to (any port, while the entry lives); fixed in OVS 3.2.0",
}}

// parseOVSVersion reads major.minor.patch from ovs_version ("3.1.0",
// "3.1.0-2+deb12u1", "3.3.90").
func parseOVSVersion(v string) (ovsRelease, bool) {
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) < 3 {
		return ovsRelease{}, false
	}
	var n [3]int
	for i := range n {
		x, err := strconv.Atoi(parts[i])
		if err != nil {
			return ovsRelease{}, false
		}
		n[i] = x
	}
	return ovsRelease{n[0], n[1], n[2]}, true
}

func (r ovsRelease) less(o ovsRelease) bool {
	if r.major != o.major {
		return r.major < o.major
	}
	if r.minor != o.minor {
		return r.minor < o.minor
	}
	return r.patch < o.patch
}

// affects reports whether release r on datapath dp has the defect.
func (d ovsDefect) affects(r ovsRelease, dp ovsdb.DatapathType) bool {
	if dp != d.datapath {
		return false
	}
	for _, f := range d.fixed {
		if r.major == f.major && r.minor == f.minor {
			return r.less(f)
		}
	}
	// A branch the list does not name: affected when older than the
	// first fixed branch, fixed when newer than the last.
	return r.less(d.fixed[0])
}

// KnownOVSDefects returns what each known defect of OVS version v does on
// datapath dp; nothing when v cannot be read.
func KnownOVSDefects(v string, dp ovsdb.DatapathType) []string {
	r, ok := parseOVSVersion(v)
	if !ok {
		return nil
	}
	var out []string
	for _, d := range ovsDefects {
		if d.affects(r, dp) {
			out = append(out, d.what)
		}
	}
	return out
}

// OVSDefectAffects reports whether OVS version v on datapath dp has the
// known defect id; false when v cannot be read.
func OVSDefectAffects(id, v string, dp ovsdb.DatapathType) bool {
	r, ok := parseOVSVersion(v)
	if !ok {
		return false
	}
	for _, d := range ovsDefects {
		if d.id == id {
			return d.affects(r, dp)
		}
	}
	return false
}

// versioner is the part of *ovsdb.Client that reads OVS's version.
type versioner interface {
	Version(ctx context.Context) (string, error)
}

// warnOVSDefects logs a warning for every known defect of the node's OVS
// that affects Seine on its datapath. It never stops the agent.
func (a *Agent) warnOVSDefects(ctx context.Context) {
	v, ok := a.db.(versioner)
	if !ok {
		return
	}
	ver, err := v.Version(ctx)
	if err != nil {
		a.log.Info("cannot read the OVS version to check it for known defects", "err", err)
		return
	}
	for _, what := range KnownOVSDefects(ver, a.cfg.datapath()) {
		a.log.Warn("known defect of this OVS release", "ovs_version", ver, "datapath", a.cfg.datapath(), "defect", what)
	}
}
