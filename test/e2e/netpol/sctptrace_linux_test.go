package netpol

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/ovs/appctl"
)

// SCTP without kernel SCTP: no listener can run, but the flows Seine
// installed can still be asked what they do with an SCTP packet.
// ofproto/trace needs no SCTP in the kernel (conntrack is assumed to find a
// new association, which is what policy checks). A traced cell is answered
// when the packet reaches the destination pod's port, dropped when an
// isolation drop flow of table 50 or 80 drops it, and wrong otherwise. A
// packet for another node is traced on the source node up to the tunnel and
// then, as it arrives from the tunnel, on the destination node.

// traced says whether a target's matrix is traced instead of probed.
func (s *suite) traced(tg target) bool {
	return tg.proto == corev1.ProtocolSCTP && s.sctpErr != nil
}

// tunnelPort is the name of the agent's tunnel port (core/agent.TunnelPort).
const tunnelPort = "seine-tun0"

// globalVirtualMAC is the destination MAC of tunnelled packets
// (core/pipeline.GlobalVirtualMAC).
const globalVirtualMAC = "02:53:45:49:4e:45"

// traceNode is what tracing on one node needs.
type traceNode struct {
	name, ip string
	flows    *nodeFlows
	tunnel   uint32
	ac       *appctl.Client
}

var portDescRE = regexp.MustCompile(`(?m)^\s*(\d+)\(` + regexp.QuoteMeta(tunnelPort) + `\):`)

func (s *suite) traceNodes() (map[string]*traceNode, func(), error) {
	nodes := map[string]*traceNode{}
	closeAll := func() {
		for _, n := range nodes {
			if n.ac != nil {
				n.ac.Close()
			}
		}
	}
	for _, n := range s.c.NodeList() {
		tn := &traceNode{name: n.Name, ip: n.IP}
		nodes[n.Name] = tn
		var err error
		if tn.flows, err = s.dumpNode(n.Name); err != nil {
			closeAll()
			return nil, nil, err
		}
		sock := filepath.Join(s.c.NodeOVSDir(n.Name), "run", "br-int.mgmt")
		out, err := exec.CommandContext(s.ctx, "ovs-ofctl", "-O", "OpenFlow15", "dump-ports-desc", "unix:"+sock).CombinedOutput()
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dump-ports-desc on %s: %w\n%s", n.Name, err, out)
		}
		m := portDescRE.FindSubmatch(out)
		if m == nil {
			closeAll()
			return nil, nil, fmt.Errorf("%s has no port %s:\n%s", n.Name, tunnelPort, out)
		}
		p, _ := strconv.ParseUint(string(m[1]), 10, 32)
		tn.tunnel = uint32(p)
		if tn.ac, err = s.vswitchd(n.Name); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	return nodes, closeAll, nil
}

// traceMatrix traces every pair on tg (SCTP).
func (s *suite) traceMatrix(tg target) *observed {
	o := newObserved(s.pods)
	nodes, done, err := s.traceNodes()
	if err != nil {
		for i := range s.pods {
			for j := range s.pods {
				if i != j {
					o.cells[i][j] = cell{v: wrong, detail: "cannot trace: " + err.Error()}
				}
			}
		}
		return o
	}
	defer done()
	for i, from := range s.pods {
		for j, to := range s.pods {
			if i != j {
				o.cells[i][j] = s.traceCell(nodes, from, to, tg)
			}
		}
	}
	return o
}

var (
	traceStepRE  = regexp.MustCompile(`^\s*(\d+)\. (?:(.*), )?priority (\d+)`)
	traceOutRE   = regexp.MustCompile(`-> output port is (\d+)|^\s*output:(\d+)\s*$`)
	traceTunDst  = regexp.MustCompile(`set_field:([0-9.]+)->tun_dst`)
	traceDropped = "Datapath actions: drop"
)

// ofTrace is what one ofproto/trace said.
type ofTrace struct {
	text      string
	outputs   []uint32
	lastTable int
	lastPrio  int
	lastMatch string
}

func (s *suite) ofTrace(n *traceNode, flow string) (ofTrace, error) {
	text, err := n.ac.OfprotoTrace(s.ctx, "br-int", flow)
	if err != nil {
		return ofTrace{}, fmt.Errorf("ofproto/trace on %s %s: %w", n.name, flow, err)
	}
	tr := ofTrace{text: text, lastTable: -1}
	for _, l := range strings.Split(text, "\n") {
		if m := traceStepRE.FindStringSubmatch(l); m != nil {
			tr.lastTable, _ = strconv.Atoi(m[1])
			tr.lastPrio, _ = strconv.Atoi(m[3])
			tr.lastMatch = m[2]
		}
		if m := traceOutRE.FindStringSubmatch(l); m != nil {
			p := m[1] + m[2]
			v, _ := strconv.ParseUint(p, 10, 32)
			tr.outputs = append(tr.outputs, uint32(v))
		}
	}
	return tr, nil
}

// verdict reads a trace that did not reach the destination pod.
func (tr ofTrace) verdict(node string) cell {
	policyDrop := (tr.lastTable == tableEgress || tr.lastTable == tableIngress) && tr.lastPrio == prioIsolationDrop
	switch {
	case policyDrop && strings.Contains(tr.text, traceDropped):
		return cell{v: dropped, detail: fmt.Sprintf("traced: dropped on %s by table %d %s", node, tr.lastTable, tr.lastMatch)}
	case strings.Contains(tr.text, traceDropped):
		return cell{v: wrong, detail: fmt.Sprintf("traced: dropped on %s in table %d priority %d (%s), not by a policy", node, tr.lastTable, tr.lastPrio, tr.lastMatch)}
	}
	return cell{v: wrong, detail: fmt.Sprintf("traced: on %s the packet went to ports %v, not to the pod", node, tr.outputs)}
}

func (s *suite) traceCell(nodes map[string]*traceNode, from, to podRef, tg target) cell {
	src, dst := nodes[s.node[from]], nodes[s.node[to]]
	srcIP, dstIP := s.ip[from], s.ip[to]
	inPort, okIn := src.flows.port[srcIP]
	outPort, okOut := dst.flows.port[dstIP]
	if !okIn || !okOut {
		return cell{v: wrong, detail: fmt.Sprintf("cannot trace: no SpoofGuard flow for %s on %s or %s on %s", from, src.name, to, dst.name)}
	}
	// A pod reaches a pod of its own node (its subnet) directly, any other
	// through its gateway.
	dlDst := src.flows.gatewayMAC
	if src == dst {
		dlDst = dst.flows.mac[dstIP]
	}
	l4 := fmt.Sprintf("nw_src=%s,nw_dst=%s,sctp_src=40000,sctp_dst=%d", srcIP, dstIP, tg.port)
	tr, err := s.ofTrace(src, fmt.Sprintf("in_port=%d,sctp,dl_src=%s,dl_dst=%s,nw_ttl=64,%s", inPort, src.flows.mac[srcIP], dlDst, l4))
	if err != nil {
		return cell{v: wrong, detail: err.Error()}
	}
	if src == dst {
		if slices.Contains(tr.outputs, outPort) {
			return cell{v: answered}
		}
		return tr.verdict(src.name)
	}
	if !slices.Contains(tr.outputs, src.tunnel) {
		return tr.verdict(src.name)
	}
	m := traceTunDst.FindStringSubmatch(tr.text)
	if m == nil || m[1] != dst.ip {
		return cell{v: wrong, detail: fmt.Sprintf("traced: %s tunnelled it to %v, not to %s (%s)", src.name, m, dst.name, dst.ip)}
	}
	tr, err = s.ofTrace(dst, fmt.Sprintf("in_port=%d,tun_src=%s,tun_dst=%s,tun_id=0,sctp,dl_src=%s,dl_dst=%s,nw_ttl=63,%s",
		dst.tunnel, src.ip, dst.ip, src.flows.gatewayMAC, globalVirtualMAC, l4))
	if err != nil {
		return cell{v: wrong, detail: err.Error()}
	}
	if slices.Contains(tr.outputs, outPort) {
		return cell{v: answered}
	}
	return tr.verdict(dst.name)
}
