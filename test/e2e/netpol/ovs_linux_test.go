package netpol

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/seine-cni/seine/ovs/appctl"
)

// The suite reads each node's OVS directly: ovs-ofctl for the flow tables
// and their counters, ovs-appctl (Seine's client) for revalidator/purge and
// ofproto/trace.

// dumpNode reads one node's flow tables.
func (s *suite) dumpNode(node string) (*nodeFlows, error) {
	sock := filepath.Join(s.c.NodeOVSDir(node), "run", "br-int.mgmt")
	out, err := exec.CommandContext(s.ctx, "ovs-ofctl", "-O", "OpenFlow15", "--no-names", "dump-flows", "unix:"+sock).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("dump-flows on %s: %w\n%s", node, err, out)
	}
	flows, err := parseFlows(string(out))
	if err != nil {
		return nil, fmt.Errorf("dump-flows on %s: %w", node, err)
	}
	n, err := readNodeFlows(flows)
	if err != nil {
		return nil, fmt.Errorf("dump-flows on %s: %w", node, err)
	}
	return n, nil
}

// vswitchd connects to a node's ovs-vswitchd control socket.
func (s *suite) vswitchd(node string) (*appctl.Client, error) {
	c, err := appctl.DialTarget(s.ctx, filepath.Join(s.c.NodeOVSDir(node), "run"), "ovs-vswitchd")
	if err != nil {
		return nil, fmt.Errorf("ovs-vswitchd of %s: %w", node, err)
	}
	return c, nil
}

// settledFlows reads the tables of nodes once their counters include every
// packet the datapath has seen: ovs-vswitchd credits the packets of a cached
// datapath flow to the OpenFlow flows it was made from only when its
// revalidators dump it (every ~0.5 s), or when the flow is removed.
// revalidator/purge removes every cached flow now, crediting its packets;
// the next packets rebuild the cache. (The agent's own dpctl/del-flows,
// after a change that narrows policy, drops those counts instead; no change
// runs while a step counts drops.)
func (s *suite) settledFlows(nodes []string) (map[string]*nodeFlows, error) {
	out := map[string]*nodeFlows{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.vswitchd(n)
			if err != nil {
				errs[i] = err
				return
			}
			_, err = c.Call(s.ctx, "revalidator/purge")
			c.Close()
			if err != nil {
				errs[i] = fmt.Errorf("revalidator/purge on %s: %w", n, err)
				return
			}
			f, err := s.dumpNode(n)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			out[n] = f
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// countedRound probes every pair on targets once, reading every node's
// isolation drop counters before and after (see drops_test.go), and returns
// the matrices and what each isolation drop flow counted meanwhile.
func (s *suite) countedRound(targets []target) ([]*observed, map[string]*nodeFlows, map[dropFlow]int64, error) {
	var nodes []string
	for _, n := range s.c.NodeList() {
		nodes = append(nodes, n.Name)
	}
	before, err := s.settledFlows(nodes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read the drop counters: %w", err)
	}
	got := s.probeAll(targets)
	after, err := s.settledFlows(nodes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read the drop counters: %w", err)
	}
	podAt := map[string]podRef{} // node/IP -> pod
	for _, p := range s.pods {
		podAt[s.node[p]+"/"+s.ip[p]] = p
	}
	delta := map[dropFlow]int64{}
	for _, n := range nodes {
		for ip, port := range before[n].port {
			pod, ok := podAt[n+"/"+ip]
			if !ok {
				continue // not one of the suite's pods
			}
			if b, ok := before[n].egressDrop[port]; ok {
				delta[dropFlow{n, tableEgress, port, pod}] = int64(after[n].egressDrop[port]) - int64(b)
			}
			if b, ok := before[n].ingressDrop[port]; ok {
				delta[dropFlow{n, tableIngress, port, pod}] = int64(after[n].ingressDrop[port]) - int64(b)
			}
		}
	}
	return got, before, delta, nil
}

// deniedProbes lists the probes of denied pairs that timed out in got, each
// with the isolation drop flows (of flows, read before the round) that may
// have dropped it.
func (s *suite) deniedProbes(checks []check, got []*observed, flows map[string]*nodeFlows) []deniedProbe {
	var out []deniedProbe
	for k, c := range checks {
		if s.traced(c.t) {
			continue // no packets: the trace shows the drop flow itself
		}
		for i, from := range c.want.pods {
			for j, to := range c.want.pods {
				if i == j || c.want.allow[i][j] || got[k].cells[i][j].v != dropped {
					continue
				}
				p := deniedProbe{cell: fmt.Sprintf("%s -> %s %s", from, to, c.t), packets: max(int64(got[k].cells[i][j].sent), 1)}
				if f := flows[s.node[from]]; f != nil {
					if port, ok := f.port[s.ip[from]]; ok {
						if _, ok := f.egressDrop[port]; ok {
							p.candidates = append(p.candidates, dropFlow{s.node[from], tableEgress, port, from})
						}
					}
				}
				if f := flows[s.node[to]]; f != nil {
					if port, ok := f.port[s.ip[to]]; ok {
						if _, ok := f.ingressDrop[port]; ok {
							p.candidates = append(p.candidates, dropFlow{s.node[to], tableIngress, port, to})
						}
					}
				}
				out = append(out, p)
			}
		}
	}
	return out
}

func verdictName(v verdict) string {
	return map[verdict]string{answered: "answered", dropped: "timed out", refused: "refused/reset",
		unreachable: "unreachable", wrong: "a wrong answer or an error"}[v]
}
