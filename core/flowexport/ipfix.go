package flowexport

import (
	"fmt"
	"hash/fnv"
	"net"
	"sync"

	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/registry"
)

// Template IDs: one template per address family.
const (
	TemplateIPv4 uint16 = 256
	TemplateIPv6 uint16 = 257
)

type ieName struct {
	name string
	pen  uint32
}

func iana(n string) ieName { return ieName{n, registry.IANAEnterpriseID} }
func rev(n string) ieName  { return ieName{n, registry.IANAReversedEnterpriseID} }
func k8s(n string) ieName  { return ieName{n, registry.AntreaEnterpriseID} }

// fields lists a record's information elements in template order; the
// address elements are per family and come first.
var fields = []ieName{
	iana("flowStartSeconds"), iana("flowEndSeconds"), iana("flowEndReason"),
	iana("sourceTransportPort"), iana("destinationTransportPort"), iana("protocolIdentifier"),
	iana("packetTotalCount"), iana("octetTotalCount"), iana("packetDeltaCount"), iana("octetDeltaCount"),
	rev("reversePacketTotalCount"), rev("reverseOctetTotalCount"), rev("reversePacketDeltaCount"), rev("reverseOctetDeltaCount"),
	k8s("sourcePodNamespace"), k8s("sourcePodName"), k8s("destinationPodNamespace"), k8s("destinationPodName"),
	k8s("sourceNodeName"), k8s("destinationNodeName"),
	k8s("destinationServicePort"), k8s("destinationServicePortName"),
	k8s("tcpState"), k8s("flowType"),
	k8s("ingressNetworkPolicyName"), k8s("ingressNetworkPolicyNamespace"), k8s("ingressNetworkPolicyType"),
	k8s("ingressNetworkPolicyRuleName"), k8s("ingressNetworkPolicyRuleAction"),
	k8s("egressNetworkPolicyName"), k8s("egressNetworkPolicyNamespace"), k8s("egressNetworkPolicyType"),
	k8s("egressNetworkPolicyRuleName"), k8s("egressNetworkPolicyRuleAction"),
}

var (
	v4Addrs = []ieName{iana("sourceIPv4Address"), iana("destinationIPv4Address"), k8s("destinationServiceIPv4")}
	v6Addrs = []ieName{iana("sourceIPv6Address"), iana("destinationIPv6Address"), k8s("destinationServiceIPv6")}
)

var (
	registryOnce sync.Once
	ies          map[uint16][]*entities.InfoElement
	iesErr       error
)

// templateIEs returns the information elements of a template, from
// go-ipfix's registries.
func templateIEs(id uint16) ([]*entities.InfoElement, error) {
	registryOnce.Do(func() {
		registry.LoadRegistry()
		ies = map[uint16][]*entities.InfoElement{}
		for id, addrs := range map[uint16][]ieName{TemplateIPv4: v4Addrs, TemplateIPv6: v6Addrs} {
			for _, f := range append(append([]ieName{}, addrs...), fields...) {
				ie, err := registry.GetInfoElement(f.name, f.pen)
				if err != nil {
					iesErr = fmt.Errorf("information element %s (PEN %d): %w", f.name, f.pen, err)
					return
				}
				ies[id] = append(ies[id], ie)
			}
		}
	})
	return ies[id], iesErr
}

// templateSet returns the template set announcing id.
func templateSet(id uint16) (entities.Set, error) {
	list, err := templateIEs(id)
	if err != nil {
		return nil, err
	}
	elems := make([]entities.InfoElementWithValue, len(list))
	for i, ie := range list {
		elems[i], err = entities.DecodeAndCreateInfoElementWithValue(ie, nil)
		if err != nil {
			return nil, err
		}
	}
	set := entities.NewSet(false)
	if err := set.PrepareSet(entities.Template, id); err != nil {
		return nil, err
	}
	if err := set.AddRecordV2(elems, id); err != nil {
		return nil, err
	}
	return set, nil
}

// templateFor returns the template id of r's address family.
func templateFor(r *Record) uint16 {
	if r.Src.Is4() {
		return TemplateIPv4
	}
	return TemplateIPv6
}

// dataRecord encodes r with its family's template.
func dataRecord(r *Record) (entities.Record, error) {
	id := templateFor(r)
	list, err := templateIEs(id)
	if err != nil {
		return nil, err
	}
	var svcIP net.IP
	if r.ServiceIP.IsValid() {
		svcIP = r.ServiceIP.AsSlice()
	} else if id == TemplateIPv4 {
		svcIP = net.IPv4zero.To4()
	} else {
		svcIP = net.IPv6zero
	}
	var svcPort uint16
	var svcPortName string
	if r.Service.Name != "" {
		svcPort = r.DstPort
		svcPortName = r.Service.Namespace + "/" + r.Service.Name + ":" + r.Service.Port
	}
	e := make([]entities.InfoElementWithValue, 0, len(list))
	e = append(e,
		entities.NewIPAddressInfoElement(list[0], r.Src.AsSlice()),
		entities.NewIPAddressInfoElement(list[1], r.Dst.AsSlice()),
		entities.NewIPAddressInfoElement(list[2], svcIP),
	)
	l := list[3:]
	e = append(e,
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
	)
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
		return nil, fmt.Errorf("record has %d elements, template %d has %d", len(e), id, len(list))
	}
	return entities.NewDataRecordFromElements(id, e), nil
}

// ObservationDomainID is the FNV-32a hash of the node name: stable across
// restarts, distinct per node.
func ObservationDomainID(node string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(node))
	return h.Sum32()
}
