package flowexport

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vmware/go-ipfix/pkg/entities"
)

// goIPFIXRecord encodes r with go-ipfix's own element values, the way the
// exporter did before appendRecord: the reference appendRecord must match.
func goIPFIXRecord(t *testing.T, r *Record) []byte {
	t.Helper()
	id := templateFor(r)
	list, err := templateIEs(id)
	if err != nil {
		t.Fatal(err)
	}
	svcIP := net.IPv4zero.To4()
	if r.ServiceIP.IsValid() {
		svcIP = r.ServiceIP.AsSlice()
	} else if id == TemplateIPv6 {
		svcIP = net.IPv6zero
	}
	var svcPort uint16
	var svcPortName string
	if r.Service.Name != "" {
		svcPort, svcPortName = r.DstPort, r.Service.Namespace+"/"+r.Service.Name+":"+r.Service.Port
	}
	l := list[3:]
	e := []entities.InfoElementWithValue{
		entities.NewIPAddressInfoElement(list[0], r.Src.AsSlice()),
		entities.NewIPAddressInfoElement(list[1], r.Dst.AsSlice()),
		entities.NewIPAddressInfoElement(list[2], svcIP),
		entities.NewDateTimeSecondsInfoElement(l[0], uint32(r.Start.Unix())),
		entities.NewDateTimeSecondsInfoElement(l[1], uint32(r.End.Unix())),
		entities.NewUnsigned8InfoElement(l[2], r.EndReason),
		entities.NewUnsigned16InfoElement(l[3], r.SrcPort),
		entities.NewUnsigned16InfoElement(l[4], r.DstPort),
		entities.NewUnsigned8InfoElement(l[5], r.Proto),
		entities.NewUnsigned64InfoElement(l[6], r.Packets),
		entities.NewUnsigned64InfoElement(l[7], r.Bytes),
		entities.NewUnsigned64InfoElement(l[8], r.PacketsDelta),
		entities.NewUnsigned64InfoElement(l[9], r.BytesDelta),
		entities.NewUnsigned64InfoElement(l[10], r.RevPackets),
		entities.NewUnsigned64InfoElement(l[11], r.RevBytes),
		entities.NewUnsigned64InfoElement(l[12], r.RevPacketsDelta),
		entities.NewUnsigned64InfoElement(l[13], r.RevBytesDelta),
		entities.NewStringInfoElement(l[14], r.SrcPod.Namespace),
		entities.NewStringInfoElement(l[15], r.SrcPod.Name),
		entities.NewStringInfoElement(l[16], r.DstPod.Namespace),
		entities.NewStringInfoElement(l[17], r.DstPod.Name),
		entities.NewStringInfoElement(l[18], r.SrcPod.Node),
		entities.NewStringInfoElement(l[19], r.DstPod.Node),
		entities.NewUnsigned16InfoElement(l[20], svcPort),
		entities.NewStringInfoElement(l[21], svcPortName),
		entities.NewStringInfoElement(l[22], r.TCPState),
		entities.NewUnsigned8InfoElement(l[23], r.FlowType),
	}
	for i, p := range []*Policy{&r.Ingress, &r.Egress} {
		pl := l[24+5*i:]
		e = append(e,
			entities.NewStringInfoElement(pl[0], p.Name),
			entities.NewStringInfoElement(pl[1], p.Namespace),
			entities.NewUnsigned8InfoElement(pl[2], p.Type),
			entities.NewStringInfoElement(pl[3], p.Rule),
			entities.NewUnsigned8InfoElement(pl[4], p.Action),
		)
	}
	if len(e) != len(list) {
		t.Fatalf("the reference has %d elements, template %d has %d", len(e), id, len(list))
	}
	b, err := entities.NewDataRecordFromElements(id, e).GetBuffer()
	if err != nil {
		t.Fatalf("go-ipfix: %v", err)
	}
	return b
}

// TestAppendRecordIsGoIPFIXs: appendRecord writes, for records of both
// families, with and without a Service, policies, counters and with
// strings on each side of IPFIX's one-byte length, the bytes go-ipfix's
// element values write; what go-ipfix cannot encode it refuses too, and
// leaves nothing behind in the batch.
func TestAppendRecordIsGoIPFIXs(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	full := Record{Start: t0, End: t0.Add(90 * time.Second), EndReason: EndActive, Proto: ProtoTCP,
		Src: netip.MustParseAddr("10.244.1.5"), Dst: netip.MustParseAddr("10.96.0.10"), SrcPort: 40000, DstPort: 53,
		Counted: true, Packets: 1 << 40, Bytes: 1<<63 + 7, PacketsDelta: 3, BytesDelta: 300,
		RevPackets: 5, RevBytes: 500, RevPacketsDelta: 1, RevBytesDelta: 100,
		SrcPod: Pod{"default", "client", "node-1"}, DstPod: Pod{"kube-system", "coredns-0", "node-2"},
		Service: Service{"kube-system", "kube-dns", "dns-tcp"}, ServiceIP: netip.MustParseAddr("10.96.0.10"),
		TCPState: "ESTABLISHED", FlowType: FlowInterNode,
		Ingress: Policy{Type: PolicyCluster, Name: "allow-dns", Rule: "dns", Action: ActionAllow},
		Egress:  Policy{Type: PolicyK8s, Namespace: "default", Name: "egress", Rule: "egress/0", Action: ActionAllow}}
	v6 := full
	v6.Src, v6.Dst, v6.ServiceIP = netip.MustParseAddr("fd00:10:244:1::5"), netip.MustParseAddr("fd00:10:96::a"), netip.MustParseAddr("fd00:10:96::a")
	noService := full
	noService.Service, noService.ServiceIP, noService.Proto, noService.TCPState = Service{}, netip.Addr{}, ProtoUDP, ""
	v6NoService := v6
	v6NoService.Service, v6NoService.ServiceIP = Service{}, netip.Addr{}
	long := noService
	long.SrcPod.Name, long.DstPod.Name = strings.Repeat("a", 254), strings.Repeat("b", 255)
	long.Ingress.Rule, long.Egress.Name = strings.Repeat("r", 300), strings.Repeat("n", 65535)
	for name, r := range map[string]Record{"ipv4 to a Service": full, "ipv6 to a Service": v6, "ipv4": noService,
		"ipv6": v6NoService, "long strings": long, "zero but the addresses": {Src: full.Src, Dst: full.Dst}} {
		got, err := appendRecord([]byte("prefix"), &r)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Errorf("%s: what was in the buffer is gone", name)
		}
		if want := goIPFIXRecord(t, &r); !bytes.Equal(got[len("prefix"):], want) {
			t.Errorf("%s: appendRecord wrote\n%x\ngo-ipfix writes\n%x", name, got[len("prefix"):], want)
		}
	}

	tooLong := noService
	tooLong.DstPod.Name = strings.Repeat("x", 65536)
	mixed := noService
	mixed.Dst = v6.Dst
	mixedService := full
	mixedService.ServiceIP = v6.ServiceIP
	for name, r := range map[string]Record{"a string over 65535 bytes": tooLong, "mixed families": mixed,
		"a Service of the other family": mixedService, "no addresses": {}} {
		var w wireBatch
		w.reset()
		if err := w.add(TemplateIPv4, &noService); err != nil {
			t.Fatal(err)
		}
		before := len(w.enc)
		if err := w.add(templateFor(&r), &r); err == nil {
			t.Errorf("%s: encoded", name)
		}
		if len(w.enc) != before || len(w.wires) != 1 {
			t.Errorf("%s: the refused record left %d bytes and %d records behind", name, len(w.enc)-before, len(w.wires)-1)
		}
	}
}
