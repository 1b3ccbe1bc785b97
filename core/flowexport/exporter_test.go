package flowexport

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptSource returns its polls in order, then nothing.
type scriptSource struct {
	mu    sync.Mutex
	polls [][]Conn
	calls int
}

func (s *scriptSource) Dump(context.Context) ([]Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.polls) == 0 {
		return nil, nil
	}
	p := s.polls[0]
	s.polls = s.polls[1:]
	return p, nil
}

func runExporter(t *testing.T, cfg Config, src Source) *Exporter {
	t.Helper()
	x, err := New(cfg, src, testRes, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return x
}

func TestExportDecodedByGoIPFIXCollector(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			addr, recs := startCollector(t, proto, "127.0.0.1:0")
			svc := counted(tcpConn(podA, 41000, svcIP, 80, podB, "ESTABLISHED", 86400), 12, 1500, 10, 90000)
			v6 := Conn{
				Proto: ProtoUDP, Zone: 65520, Timeout: 3,
				Orig:  Tuple{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"), SrcPort: 5353, DstPort: 53},
				Reply: Tuple{Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("fd00::1"), SrcPort: 53, DstPort: 5353},
			}
			closed := withRules(tcpConn(podA, 41001, podC, 8080, podC, "TIME_WAIT", 30), egressRule, ingressRule)
			// Poll 1 sees all three (the closed one is exported at
			// once); poll 2 the Service connection moved (active
			// timeout 1 ms); then all are gone (end of flow).
			src := &scriptSource{polls: [][]Conn{
				{svc, v6, closed},
				{counted(svc, 20, 2500, 15, 150000), v6},
			}}
			runExporter(t, Config{
				NodeName: "node-1", Collector: addr, Transport: proto,
				PollInterval: 20 * time.Millisecond, ActiveTimeout: 20 * time.Millisecond, IdleTimeout: time.Hour,
			}, src)
			got := collect(t, recs, 5, 20*time.Second)
			var lines []string
			for _, r := range got {
				if r.obsDomain != ObservationDomainID("node-1") {
					t.Errorf("observation domain %d", r.obsDomain)
				}
				f := r.fields
				if r.template == TemplateIPv6 {
					lines = append(lines, fmt.Sprintf("v6 %v:%v->%v:%v proto=%v reason=%v",
						f["sourceIPv6Address"], f["sourceTransportPort"], f["destinationIPv6Address"], f["destinationTransportPort"], f["protocolIdentifier"], f["flowEndReason"]))
					continue
				}
				lines = append(lines, fmt.Sprintf("v4 %v:%v->%v:%v reason=%v state=%v type=%v pkts=%v/%v bytes=%v/%v rev=%v/%v src=%v/%v@%v dst=%v/%v@%v svc=%v %v:%v in=%v:%v/%v/%v:%v out=%v:%v/%v/%v:%v",
					f["sourceIPv4Address"], f["sourceTransportPort"], f["destinationIPv4Address"], f["destinationTransportPort"],
					f["flowEndReason"], f["tcpState"], f["flowType"], f["packetTotalCount"], f["packetDeltaCount"],
					f["octetTotalCount"], f["octetDeltaCount"], f["reverseOctetTotalCount"], f["reverseOctetDeltaCount"],
					f["sourcePodNamespace"], f["sourcePodName"], f["sourceNodeName"],
					f["destinationPodNamespace"], f["destinationPodName"], f["destinationNodeName"],
					f["destinationServicePortName"], f["destinationServiceIPv4"], f["destinationServicePort"],
					f["ingressNetworkPolicyType"], f["ingressNetworkPolicyNamespace"], f["ingressNetworkPolicyName"], f["ingressNetworkPolicyRuleName"], f["ingressNetworkPolicyRuleAction"],
					f["egressNetworkPolicyType"], f["egressNetworkPolicyNamespace"], f["egressNetworkPolicyName"], f["egressNetworkPolicyRuleName"], f["egressNetworkPolicyRuleAction"]))
			}
			slices.Sort(lines)
			want := []string{
				"v4 10.244.1.5:41000->10.96.0.10:80 reason=2 state=ESTABLISHED type=2 pkts=20/20 bytes=2500/2500 rev=150000/150000 src=default/client@node-1 dst=web/server-0@node-2 svc=web/frontend:http 10.96.0.10:80 in=0://:0 out=0://:0",
				"v4 10.244.1.5:41000->10.96.0.10:80 reason=3 state=ESTABLISHED type=2 pkts=20/0 bytes=2500/0 rev=150000/0 src=default/client@node-1 dst=web/server-0@node-2 svc=web/frontend:http 10.96.0.10:80 in=0://:0 out=0://:0",
				"v4 10.244.1.5:41001->10.244.1.9:8080 reason=3 state=TIME_WAIT type=1 pkts=0/0 bytes=0/0 rev=0/0 src=default/client@node-1 dst=web/server-1@node-1 svc= 0.0.0.0:0 in=1:web/allow-client/ingress/0:1 out=2:default/client-out/to-web:1",
				"v6 fd00::1:5353->fd00::2:53 proto=17 reason=2",
				"v6 fd00::1:5353->fd00::2:53 proto=17 reason=3",
			}
			if strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Errorf("decoded:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestQueueBoundedWhileCollectorDown: with no collector the queue keeps
// the newest QueueSize records and counts the rest as dropped; when a
// collector comes, exactly those arrive.
func TestQueueBoundedWhileCollectorDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var polls [][]Conn
	port := uint16(0)
	for range 6 {
		var p []Conn
		for range 5 {
			port++
			p = append(p, tcpConn(podA, port, podB, 80, podB, "TIME_WAIT", 30))
		}
		polls = append(polls, p)
	}
	src := &scriptSource{polls: polls}
	x := runExporter(t, Config{
		NodeName: "node-1", Collector: addr, Transport: "tcp", QueueSize: 10,
		PollInterval: 10 * time.Millisecond, ActiveTimeout: time.Hour, IdleTimeout: time.Hour,
		RetryInterval: 20 * time.Millisecond,
	}, src)
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := x.Stats()
		if s.Polls >= 7 && s.Queued == 10 && s.RecordsDropped == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want 10 queued and 20 dropped after 6 polls of 5 ended connections", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, recs := startCollector(t, "tcp", addr)
	got := collect(t, recs, 10, 30*time.Second)
	var ports []int
	for _, r := range got {
		ports = append(ports, int(r.fields["sourceTransportPort"].(uint16)))
	}
	slices.Sort(ports)
	if want := []int{21, 22, 23, 24, 25, 26, 27, 28, 29, 30}; !slices.Equal(ports, want) {
		t.Errorf("ports %v, want the newest %v", ports, want)
	}
	time.Sleep(50 * time.Millisecond)
	if s := x.Stats(); s.RecordsSent != 10 || s.RecordsDropped != 20 || s.Queued != 0 || !s.CollectorConnected {
		t.Errorf("stats %+v", s)
	}
	select {
	case r := <-recs:
		t.Errorf("unexpected record %v", r.fields)
	default:
	}
}

func TestConfigCheck(t *testing.T) {
	ok := Config{NodeName: "n", Collector: "c:4739", Transport: "tcp"}
	c := ok
	if err := c.Check(); err != nil || c.PollInterval != DefaultPollInterval || c.QueueSize != DefaultQueueSize || c.MaxConnections != DefaultMaxConnections {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for name, mut := range map[string]func(*Config){
		"no node":          func(c *Config) { c.NodeName = "" },
		"no port":          func(c *Config) { c.Collector = "collector" },
		"transport":        func(c *Config) { c.Transport = "sctp" },
		"tls without CA":   func(c *Config) { c.Transport = "tls" },
		"tls on udp":       func(c *Config) { c.TLS = &TLS{CAData: []byte("x")} },
		"active < poll":    func(c *Config) { c.PollInterval, c.ActiveTimeout = 10*time.Second, 5*time.Second },
		"negative":         func(c *Config) { c.IdleTimeout = -time.Second },
		"negative queue":   func(c *Config) { c.QueueSize = -1 },
		"template refresh": func(c *Config) { c.TemplateRefresh = time.Millisecond },
	} {
		c := ok
		mut(&c)
		if err := c.Check(); err == nil || !strings.HasPrefix(err.Error(), "flow export: ") {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

// gateSource returns what the test put in, one batch per poll, then
// nothing.
type gateSource struct {
	mu      sync.Mutex
	batches [][]Conn
}

func (s *gateSource) put(c ...Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, c)
}

func (s *gateSource) Dump(context.Context) ([]Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.batches) == 0 {
		return nil, nil
	}
	b := s.batches[0]
	s.batches = s.batches[1:]
	return b, nil
}

// TestCollectorRestartLosesLittle: a record exported 500 ms after the
// collector went away still reaches the collector that comes back. IPFIX
// has no acknowledgements, so what is written before the exporter sees the
// connection closed is lost; the exporter looks every checkConnInterval
// (100 ms), so the window is that short (with a look every second, as
// before, this record was lost in half the runs: it failed its first run).
func TestCollectorRestartLosesLittle(t *testing.T) {
	cp, recs, addr := startCollectorProcess(t, "tcp", "127.0.0.1:0")
	src := &gateSource{}
	x := runExporter(t, Config{
		NodeName: "node-1", Collector: addr, Transport: "tcp",
		PollInterval: 10 * time.Millisecond, ActiveTimeout: time.Hour, IdleTimeout: time.Hour,
		RetryInterval: 20 * time.Millisecond,
	}, src)
	src.put(tcpConn(podA, 1, podB, 80, podB, "TIME_WAIT", 30))
	if got := collect(t, recs, 1, 10*time.Second); got[0].fields["sourceTransportPort"].(uint16) != 1 {
		t.Fatalf("first record %v", got[0].fields)
	}
	cp.Stop()
	time.Sleep(500 * time.Millisecond)
	src.put(tcpConn(podA, 2, podB, 80, podB, "TIME_WAIT", 30))
	time.Sleep(200 * time.Millisecond)
	_, recs, _ = startCollectorProcess(t, "tcp", addr)
	got := collect(t, recs, 1, 10*time.Second)
	if port := got[0].fields["sourceTransportPort"].(uint16); port != 2 {
		t.Errorf("after the restart: port %d, want 2", port)
	}
	// The count follows the write the collector already decoded.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s := x.Stats()
		if s.RecordsSent == 2 && s.RecordsDropped == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("stats %+v, want 2 sent and none dropped", s)
			break
		}
	}
}
