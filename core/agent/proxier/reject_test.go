package proxier

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/core/internal/inet"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

var (
	clientMAC = []byte{0x0a, 0, 0, 0, 1, 5}
	gwMAC     = []byte{0x0a, 0x58, 10, 244, 1, 1}
	clientIP  = []byte{10, 244, 1, 5}
	vip       = []byte{10, 96, 0, 10}
)

// frame is an Ethernet + IPv4 frame from the client to the VIP.
func frame(proto uint8, l4 []byte) []byte {
	b := append(append(append([]byte{}, gwMAC...), clientMAC...), 0x08, 0x00)
	b = append(b, ipv4Header(clientIP, vip, proto, len(l4))...)
	return append(b, l4...)
}

func tcpSeg(flags byte, seq uint32, payload int) []byte {
	t := make([]byte, 20+payload)
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 80)
	binary.BigEndian.PutUint32(t[4:], seq)
	t[12], t[13] = 5<<4, flags
	return t
}

func TestRejectReply(t *testing.T) {
	r, err := RejectReply(frame(6, tcpSeg(0x02, 1000, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r[0:6], clientMAC) || !bytes.Equal(r[6:12], gwMAC) {
		t.Errorf("MACs %x -> %x", r[6:12], r[0:6])
	}
	ip, tcp := r[14:34], r[34:]
	if !bytes.Equal(ip[12:16], vip) || !bytes.Equal(ip[16:20], clientIP) || ip[9] != 6 {
		t.Errorf("IP %v -> %v proto %d", ip[12:16], ip[16:20], ip[9])
	}
	if inet.Checksum(ip, 0) != 0 {
		t.Error("bad IP checksum")
	}
	if sp, dp := binary.BigEndian.Uint16(tcp), binary.BigEndian.Uint16(tcp[2:]); sp != 80 || dp != 40000 {
		t.Errorf("ports %d -> %d", sp, dp)
	}
	if tcp[13] != 0x14 || binary.BigEndian.Uint32(tcp[8:]) != 1001 {
		t.Errorf("flags %#x ack %d, want RST+ACK acking 1001", tcp[13], binary.BigEndian.Uint32(tcp[8:]))
	}
	if inet.L4Checksum(ip[12:16], ip[16:20], 6, tcp) != 0 {
		t.Error("bad TCP checksum")
	}

	// UDP: ICMP port unreachable quoting the datagram's IP header and 8 bytes.
	udp := make([]byte, 8+100)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	in := frame(17, udp)
	r, err = RejectReply(in)
	if err != nil {
		t.Fatal(err)
	}
	ip, icmp := r[14:34], r[34:]
	if ip[9] != 1 || !bytes.Equal(ip[12:16], vip) || icmp[0] != 3 || icmp[1] != 3 {
		t.Errorf("ICMP reply: proto %d from %v type %d code %d", ip[9], ip[12:16], icmp[0], icmp[1])
	}
	if !bytes.Equal(icmp[8:], in[14:14+28]) {
		t.Errorf("quote %x, want %x", icmp[8:], in[14:42])
	}
	if inet.Checksum(icmp, 0) != 0 {
		t.Error("bad ICMP checksum")
	}

	// Nothing answers what is not a connection attempt.
	for name, f := range map[string][]byte{
		"ACK":  frame(6, tcpSeg(0x10, 1, 0)),
		"RST":  frame(6, tcpSeg(0x04|0x02, 1, 0)),
		"ICMP": frame(1, make([]byte, 8)),
		"ARP":  append(make([]byte, 12), 0x08, 0x06, 0, 0),
	} {
		if _, err := RejectReply(f); err == nil {
			t.Errorf("%s answered", name)
		}
	}
}

// A packet-in of the reject flow is answered with a packet-out of the
// reply to the port it came from; other packet-ins are not the proxy's.
func TestRejectPacketIns(t *testing.T) {
	n := newFakeNode()
	c := newController(t, n, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.answerRejects(ctx)
	if c.HandlePacketIn(&openflow.PacketIn{Userdata: []byte{9}}) {
		t.Error("a foreign packet-in taken")
	}
	pi := packetIn(t, 10, []byte{pipeline.PacketInReject}, frame(6, tcpSeg(0x02, 7, 0)))
	if !c.HandlePacketIn(pi) {
		t.Fatal("reject packet-in not taken")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.mu.Lock()
		got := len(n.applied)
		n.mu.Unlock()
		if got > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no packet-out")
		}
		time.Sleep(5 * time.Millisecond)
	}
	po, ok := n.applied[0].(*openflow.PacketOut)
	if !ok || !bytes.Contains([]byte(po.String()), []byte("actions=output:10")) {
		t.Errorf("packet-out %v", n.applied[0])
	}
}

// packetIn is a packet-in from port inPort, as the switch sends it.
func packetIn(t *testing.T, inPort uint32, userdata, pkt []byte) *openflow.PacketIn {
	t.Helper()
	b, err := openflow.Marshal(&openflow.PacketIn{Userdata: userdata, Packet: pkt,
		Metadata: openflow.NewMatch().InPort(inPort).Bytes()}, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := openflow.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	pi, ok := m.(*openflow.PacketIn)
	if !ok || pi.InPort() != inPort {
		t.Fatalf("decoded %T in_port %d", m, pi.InPort())
	}
	return pi
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func TestHealthChecks(t *testing.T) {
	var addr string
	hc := NewHealthChecks(testLogger(t), func(port uint16) (net.Listener, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = ln.Addr().String()
		}
		return ln, err
	})
	defer hc.Close()
	// svc has local ready endpoints, or with terminating the serving
	// terminating ones the proxy falls back to when no local endpoint is
	// ready (its LocalEndpoints then).
	svcOf := func(local int, terminating bool) *proxy.Service {
		p := proxy.Port{Name: "http", Protocol: proxy.ProtoTCP, Port: 80, HealthCheckNodePort: 31000, LocalEndpoints: []proxy.Endpoint{}}
		for i := 0; i < local; i++ {
			e := proxy.Endpoint{IP: netipAddr(fmt.Sprintf("10.244.1.%d", 5+i)), Port: 8080, Local: true, Ready: true, Serving: true}
			if terminating {
				e.Ready, e.Terminating = false, true
			}
			p.LocalEndpoints = append(p.LocalEndpoints, e)
		}
		return &proxy.Service{Namespace: "default", Name: "lb", Ports: []proxy.Port{p}}
	}
	svc := func(local int) *proxy.Service { return svcOf(local, false) }
	get := func() (int, map[string]any) {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return resp.StatusCode, m
	}
	hc.Set("default/lb", svc(2))
	if code, m := get(); code != 200 || m["localEndpoints"] != float64(2) {
		t.Errorf("two local endpoints: %d %v", code, m)
	}
	hc.Set("default/lb", svc(0))
	if code, m := get(); code != 503 || m["localEndpoints"] != float64(0) {
		t.Errorf("no local endpoint: %d %v", code, m)
	}
	// Only terminating endpoints left on the node: the Service still
	// sends them its traffic, but the node asks the load balancer for none
	// (kube-proxy counts the ready local endpoints; the upstream spec
	// "should fail health check node port if there are only terminating
	// endpoints" wants 503).
	hc.Set("default/lb", svcOf(1, true))
	if code, m := get(); code != 503 || m["localEndpoints"] != float64(0) {
		t.Errorf("only a terminating local endpoint: %d %v, want 503 and 0", code, m)
	}
	hc.Set("default/lb", nil)
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the health-check port still answers after the Service went")
	}
	_ = corev1.ServiceTypeLoadBalancer
}
