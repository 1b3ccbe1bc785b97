package pipeline

import "github.com/seine-cni/seine/ovs/openflow"

// Domain-name peers (core/fqdn): while a rule on this node names domain
// names, every DNS answer to a local pod goes to the agent first. The flow
// pauses the pipeline at IngressTier (a controller action with pause,
// through DNSResponseMeter); the agent learns the answer's addresses,
// installs them as the rule's peers, and only then resumes the packet
// (NXT_RESUME), which continues to ConntrackCommit with its registers and
// conntrack state as they were: the pod receives the answer after the
// rule already allows its addresses. The same flow on Linux and Windows.

// PacketInDNSResponse is the first byte of the userdata of a paused DNS
// answer's packet-in.
const PacketInDNSResponse byte = 6

// DNSResponseMeter bounds the DNS answers sent to the agent
// (DNSResponseRate per second, as a burst too): a flood cannot starve the
// agent. An answer the meter drops is lost (a paused packet goes nowhere
// else); the pod's resolver asks again.
const (
	DNSResponseMeter uint32 = 4
	DNSResponseRate  uint32 = 500
)

// prioTierDNS is above the connections already judged (prioTierBypass):
// an answer is the reply of a connection the pod opened.
const prioTierDNS uint16 = 64950

// DNSInterceptFlows is the flow that takes DNS answers over UDP (source
// port 53, replies of tracked connections) on their way to a local pod to
// the agent, paused; resumed, they continue to ConntrackCommit as any
// reply does. DNS over TCP is not taken (core/fqdn/README.md).
func DNSInterceptFlows(r Round) []*openflow.Flow {
	b := &builder{cookie: NewCookie(r, CategoryDNS, 0)}
	m := matchMarks(match().UDP().UDPSrc(53).CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew), ToLocalPodMark)
	b.add(IngressTier, prioTierDNS, m, actions().Controller(openflow.Controller{
		Reason: openflow.ReasonAction, Userdata: []byte{PacketInDNSResponse}, MeterID: DNSResponseMeter, Pause: true,
	}).GotoTable(uint8(ConntrackCommit)))
	return b.flows
}

// DNSMeters is the meter the DNS flow uses; install it before the flow
// (OVS refuses meter mods inside bundles).
func DNSMeters() []*openflow.MeterEntry {
	return []*openflow.MeterEntry{{
		ID: DNSResponseMeter, Flags: openflow.MeterPktps | openflow.MeterBurst,
		Bands: []openflow.MeterBand{{Rate: DNSResponseRate, BurstSize: DNSResponseRate}},
	}}
}
