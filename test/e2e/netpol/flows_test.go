package netpol

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// What the suite reads from a node's OpenFlow tables (ovs-ofctl dump-flows
// text): which port and MAC each local pod has, the gateway's address, and
// the packet counters of the policy tables' isolation drops (see
// core/pipeline/README.md, "NetworkPolicy: 50 EgressPolicy and 80
// IngressPolicy").

// Tables and priorities of the flows the suite reads.
const (
	tableSpoofGuard   = 10
	tableARPResponder = 20
	tableEgress       = 50
	tableIngress      = 80
	prioIsolationDrop = 190
)

// flowLine is one flow of ovs-ofctl dump-flows.
type flowLine struct {
	table, priority int
	match           map[string]string // "ip" -> "", "in_port" -> "10"
	actions         string
	packets         uint64
}

// parseFlows reads ovs-ofctl -O OpenFlow15 --no-names dump-flows output.
// Lines that are not flows (the reply header) are skipped.
func parseFlows(text string) ([]flowLine, error) {
	var out []flowLine
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		head, actions, ok := strings.Cut(l, " actions=")
		if !ok {
			continue
		}
		f := flowLine{actions: actions, match: map[string]string{}}
		parts := strings.Split(head, ", ")
		for _, kv := range parts[:len(parts)-1] {
			k, v, _ := strings.Cut(kv, "=")
			var err error
			switch k {
			case "table":
				f.table, err = strconv.Atoi(v)
			case "n_packets":
				f.packets, err = strconv.ParseUint(v, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("flow %q: %s: %w", l, k, err)
			}
		}
		for _, kv := range strings.Split(parts[len(parts)-1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			if k == "priority" {
				p, err := strconv.Atoi(v)
				if err != nil {
					return nil, fmt.Errorf("flow %q: priority: %w", l, err)
				}
				f.priority = p
				continue
			}
			f.match[k] = v
		}
		out = append(out, f)
	}
	return out, nil
}

// nodeFlows is what one node's tables say about its pods and policies.
type nodeFlows struct {
	port        map[string]uint32 // local pod IP -> OpenFlow port
	mac         map[string]string // local pod IP -> MAC
	gatewayIP   string
	gatewayMAC  string
	egressDrop  map[uint32]uint64 // isolated pod's port -> packets its egress drop counted
	ingressDrop map[uint32]uint64 // likewise for ingress
}

var setEthSrcRE = regexp.MustCompile(`set_field:([0-9a-f:]{17})->eth_src`)

func readNodeFlows(flows []flowLine) (*nodeFlows, error) {
	n := &nodeFlows{port: map[string]uint32{}, mac: map[string]string{},
		egressDrop: map[uint32]uint64{}, ingressDrop: map[uint32]uint64{}}
	port := func(f flowLine, key string) (uint32, error) {
		v, err := strconv.ParseUint(f.match[key], 0, 32)
		if err != nil {
			return 0, fmt.Errorf("table %d priority %d: %s=%q: %w", f.table, f.priority, key, f.match[key], err)
		}
		return uint32(v), nil
	}
	for _, f := range flows {
		_, ip := f.match["ip"]
		_, arp := f.match["arp"]
		switch {
		// SpoofGuard: a pod may send IP from its own MAC and address only.
		case f.table == tableSpoofGuard && ip && f.match["nw_src"] != "" && f.match["dl_src"] != "":
			p, err := port(f, "in_port")
			if err != nil {
				return nil, err
			}
			n.port[f.match["nw_src"]], n.mac[f.match["nw_src"]] = p, f.match["dl_src"]
		// ARPResponder: the gateway IP answered to pods (reg0 = FromPod).
		case f.table == tableARPResponder && arp && f.match["reg0"] == "0x3/0xf" && f.match["arp_tpa"] != "":
			if m := setEthSrcRE.FindStringSubmatch(f.actions); m != nil {
				n.gatewayIP, n.gatewayMAC = f.match["arp_tpa"], m[1]
			}
		case f.table == tableEgress && f.priority == prioIsolationDrop && f.actions == "drop":
			p, err := port(f, "in_port")
			if err != nil {
				return nil, err
			}
			n.egressDrop[p] = f.packets
		case f.table == tableIngress && f.priority == prioIsolationDrop && f.actions == "drop":
			p, err := port(f, "reg1")
			if err != nil {
				return nil, err
			}
			n.ingressDrop[p] = f.packets
		}
	}
	return n, nil
}

func TestReadNodeFlows(t *testing.T) {
	dump := `OFPST_FLOW reply (OF1.5) (xid=0x2):
 cookie=0x1020000000000, duration=3.1s, table=10, n_packets=2, n_bytes=84, priority=200,arp,in_port=2,arp_sha=0a:00:00:00:01:01 actions=goto_table:20
 cookie=0x103863cd9e8ae, duration=3.1s, table=10, n_packets=40, n_bytes=4000, priority=200,ip,in_port=11,dl_src=0a:00:00:00:01:0b,nw_src=10.244.1.11 actions=goto_table:30
 cookie=0x1038854a4a0d2, duration=3.1s, table=10, n_packets=0, n_bytes=0, priority=200,ip,in_port=10,dl_src=0a:00:00:00:01:0a,nw_src=10.244.1.10 actions=goto_table:30
 cookie=0x1020000000000, duration=3.1s, table=20, n_packets=1, n_bytes=42, priority=200,arp,reg0=0x3/0xf,arp_tpa=10.244.1.1,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:00:00:00:01:01->eth_src,set_field:2->arp_op,IN_PORT
 cookie=0x103863cd9e8ae, duration=3.1s, table=20, n_packets=1, n_bytes=42, priority=200,arp,arp_tpa=10.244.1.11,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:00:00:00:01:0b->eth_src,IN_PORT
 cookie=0x1060000000000, duration=1.2s, table=50, n_packets=7, n_bytes=518, priority=190,ip,in_port=10 actions=drop
 cookie=0x1060000000000, duration=1.2s, table=80, n_packets=0, n_bytes=0, priority=200,ip,reg1=0xb actions=conjunction(97842110,1/3)
 cookie=0x1060000000000, duration=1.2s, table=80, n_packets=12, n_bytes=888, priority=190,ip,reg1=0xb actions=drop
 cookie=0x1010000000000, duration=3.1s, table=80, n_packets=99, n_bytes=9999, priority=0 actions=goto_table:90
`
	flows, err := parseFlows(dump)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 9 {
		t.Fatalf("parsed %d flows, want 9", len(flows))
	}
	n, err := readNodeFlows(flows)
	if err != nil {
		t.Fatal(err)
	}
	if n.port["10.244.1.11"] != 11 || n.port["10.244.1.10"] != 10 || len(n.port) != 2 {
		t.Errorf("ports %v", n.port)
	}
	if n.mac["10.244.1.11"] != "0a:00:00:00:01:0b" {
		t.Errorf("macs %v", n.mac)
	}
	if n.gatewayIP != "10.244.1.1" || n.gatewayMAC != "0a:00:00:00:01:01" {
		t.Errorf("gateway %s %s", n.gatewayIP, n.gatewayMAC)
	}
	if len(n.egressDrop) != 1 || n.egressDrop[10] != 7 {
		t.Errorf("egress drops %v", n.egressDrop)
	}
	if len(n.ingressDrop) != 1 || n.ingressDrop[11] != 12 {
		t.Errorf("ingress drops %v (the conjunction clause and the miss flow are not drops)", n.ingressDrop)
	}
	if _, err := parseFlows(" cookie=0x1, table=x, priority=1 actions=drop"); err == nil {
		t.Error("a bad table number parsed")
	}
}
