package flowexport

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
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

// appendRecord appends r's data record, encoded with its family's template
// (the fields of v4Addrs or v6Addrs, then fields, in that order), to b. It
// writes what go-ipfix's per-element values would (TestAppendRecordIsGoIPFIXs
// compares them byte for byte) without an object per element: at 50,000
// records a cycle those cost more than parsing the dump.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	if !r.Src.IsValid() || !r.Dst.IsValid() {
		return b, fmt.Errorf("record without both addresses: %v, %v", r.Src, r.Dst)
	}
	if r.Src.Is4() != r.Dst.Is4() || (r.ServiceIP.IsValid() && r.ServiceIP.Is4() != r.Src.Is4()) {
		return b, fmt.Errorf("record mixes address families: %v, %v, %v", r.Src, r.Dst, r.ServiceIP)
	}
	b = append(b, r.Src.AsSlice()...)
	b = append(b, r.Dst.AsSlice()...)
	switch {
	case r.ServiceIP.IsValid():
		b = append(b, r.ServiceIP.AsSlice()...)
	case r.Src.Is4():
		b = append(b, 0, 0, 0, 0)
	default:
		b = append(b, make([]byte, 16)...)
	}
	var svcPort uint16
	var svcPortName string
	if r.Service.Name != "" {
		svcPort = r.DstPort
		svcPortName = r.Service.Namespace + "/" + r.Service.Name + ":" + r.Service.Port
	}
	b = binary.BigEndian.AppendUint32(b, uint32(r.Start.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(r.End.Unix()))
	b = append(b, r.EndReason)
	b = binary.BigEndian.AppendUint16(b, r.SrcPort)
	b = binary.BigEndian.AppendUint16(b, r.DstPort)
	b = append(b, r.Proto)
	for _, c := range [...]uint64{r.Packets, r.Bytes, r.PacketsDelta, r.BytesDelta, r.RevPackets, r.RevBytes, r.RevPacketsDelta, r.RevBytesDelta} {
		b = binary.BigEndian.AppendUint64(b, c)
	}
	var err error
	for _, s := range [...]string{r.SrcPod.Namespace, r.SrcPod.Name, r.DstPod.Namespace, r.DstPod.Name, r.SrcPod.Node, r.DstPod.Node} {
		if b, err = appendString(b, s); err != nil {
			return b, err
		}
	}
	b = binary.BigEndian.AppendUint16(b, svcPort)
	if b, err = appendString(b, svcPortName); err != nil {
		return b, err
	}
	if b, err = appendString(b, r.TCPState); err != nil {
		return b, err
	}
	b = append(b, r.FlowType)
	for _, p := range [...]*Policy{&r.Ingress, &r.Egress} {
		if b, err = appendString(b, p.Name); err != nil {
			return b, err
		}
		if b, err = appendString(b, p.Namespace); err != nil {
			return b, err
		}
		b = append(b, p.Type)
		if b, err = appendString(b, p.Rule); err != nil {
			return b, err
		}
		b = append(b, p.Action)
	}
	return b, nil
}

// appendString appends s as an IPFIX variable-length value (RFC 7011
// section 7: one length byte below 255, else 255 and two length bytes).
func appendString(b []byte, s string) ([]byte, error) {
	switch {
	case len(s) < 255:
		b = append(b, byte(len(s)))
	case len(s) <= math.MaxUint16:
		b = append(b, 255)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	default:
		return b, fmt.Errorf("a string of %d bytes is longer than IPFIX allows (%d)", len(s), math.MaxUint16)
	}
	return append(b, s...), nil
}

// wireRecord is one data record appendRecord encoded, as go-ipfix's
// ExportingProcess.SendDataRecords takes it: that calls the four methods
// below and no other (the embedded nil interface stands for the rest; the
// collector tests send through go-ipfix and decode with it).
type wireRecord struct {
	entities.Record
	id  uint16
	enc []byte
}

func (w *wireRecord) GetRecordType() entities.ContentType { return entities.Data }
func (w *wireRecord) GetTemplateID() uint16               { return w.id }
func (w *wireRecord) GetRecordLength() int                { return len(w.enc) }
func (w *wireRecord) AppendToBuffer(b []byte) ([]byte, error) {
	return append(b, w.enc...), nil
}

// ObservationDomainID is the FNV-32a hash of the node name: stable across
// restarts, distinct per node.
func ObservationDomainID(node string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(node))
	return h.Sum32()
}
