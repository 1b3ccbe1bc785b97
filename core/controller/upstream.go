package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/tiers"
)

// UpstreamClusterNetworkPoliciesResource is the ClusterNetworkPolicy of
// sigs.k8s.io/network-policy-api (v0.3.0 serves v1alpha2 and v1beta1,
// stores v1beta1), which Seine maps onto its tiers (core/tiers/README.md).
var UpstreamClusterNetworkPoliciesResource = schema.GroupVersionResource{
	Group: "policy.networking.k8s.io", Version: "v1beta1", Resource: "clusternetworkpolicies",
}

// upstreamKeyPrefix starts the work queue key of an upstream
// ClusterNetworkPolicy.
const upstreamKeyPrefix = "ucnp:"

// The upstream API's JSON, as far as Seine reads it (the module's Go types
// would pull newer versions of shared dependencies into the build).
type upstreamCNP struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Tier     string `json:"tier"`
		Priority int32  `json:"priority"`
		Subject  struct {
			Namespaces *metav1.LabelSelector `json:"namespaces,omitempty"`
			Pods       *upstreamPods         `json:"pods,omitempty"`
		} `json:"subject"`
		Ingress []upstreamRule `json:"ingress,omitempty"`
		Egress  []upstreamRule `json:"egress,omitempty"`
	} `json:"spec"`
}

type upstreamPods struct {
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
	PodSelector       metav1.LabelSelector `json:"podSelector"`
}

type upstreamRule struct {
	Name      string             `json:"name,omitempty"`
	Action    string             `json:"action"`
	From      []upstreamPeer     `json:"from,omitempty"`
	To        []upstreamPeer     `json:"to,omitempty"`
	Protocols []upstreamProtocol `json:"protocols,omitempty"`
}

type upstreamPeer struct {
	Namespaces  *metav1.LabelSelector `json:"namespaces,omitempty"`
	Pods        *upstreamPods         `json:"pods,omitempty"`
	Nodes       *metav1.LabelSelector `json:"nodes,omitempty"`
	Networks    []string              `json:"networks,omitempty"`
	DomainNames []string              `json:"domainNames,omitempty"`
}

type upstreamProtocol struct {
	TCP                  *upstreamPort `json:"tcp,omitempty"`
	UDP                  *upstreamPort `json:"udp,omitempty"`
	SCTP                 *upstreamPort `json:"sctp,omitempty"`
	DestinationNamedPort string        `json:"destinationNamedPort,omitempty"`
}

type upstreamPort struct {
	DestinationPort *struct {
		Number int32 `json:"number,omitempty"`
		Range  *struct {
			Start int32 `json:"start"`
			End   int32 `json:"end"`
		} `json:"range,omitempty"`
	} `json:"destinationPort,omitempty"`
}

// AddUpstream makes the controller compute the upstream
// ClusterNetworkPolicies (policy.networking.k8s.io) from the informers of f.
// Call it after New and before f.Start and Run.
func (c *Controller) AddUpstream(f dynamicinformer.DynamicSharedInformerFactory) error {
	inf := f.ForResource(UpstreamClusterNetworkPoliciesResource).Informer()
	enqueue := func(o any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
		if err != nil {
			c.log.Error("upstream cluster network policy key", "error", err)
			return
		}
		c.enqueueKey(upstreamKeyPrefix + key)
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	if err != nil {
		return fmt.Errorf("add informer event handler: %w", err)
	}
	c.synced = append(c.synced, reg.HasSynced)
	c.upstreamIndexer = inf.GetIndexer()
	return nil
}

// syncUpstreamPolicy recomputes the internal policy of one upstream
// ClusterNetworkPolicy. Call with c.mu held.
func (c *Controller) syncUpstreamPolicy(key, name string) {
	o, ok, err := c.upstreamIndexer.GetByKey(name)
	if err != nil {
		c.log.Error("get upstream cluster network policy", "name", name, "error", err)
		return
	}
	if !ok {
		c.forgetPolicy(key)
		return
	}
	var p upstreamCNP
	if err := fromUnstructured(o, &p); err != nil {
		c.log.Error("decode upstream cluster network policy: keeping its last translation", "name", name, "error", err)
		return
	}
	obj, atgs, ags, _ := c.translateTiered(upstreamSpec(&p))
	if obj.TranslationError != "" {
		c.log.Warn("upstream cluster network policy only partly translated", "name", name, "error", obj.TranslationError)
	}
	c.storePolicy(key, obj, atgs, ags)
}

// upstreamSpec maps an upstream ClusterNetworkPolicy onto Seine's model:
// tier Admin at priority 240 (after Seine's platform tier, before its
// application tier), Baseline at 254 (after Seine's baseline); priority as
// is; subject namespaces or pods as appliedTo; Accept, Deny and Pass as
// Allow, Drop and Pass; peers namespaces and pods, egress networks as
// ipBlocks, egress nodes as a nodeSelector peer; protocols with their
// destination port, range or named port. Domain name peers have no
// equivalent yet: a rule loses them like a peer that does not parse (an
// Accept allows less, a Deny or Pass fails closed).
func upstreamSpec(p *upstreamCNP) tieredSpec {
	sp := tieredSpec{
		ref:        controlplane.NetworkPolicyReference{Type: controlplane.UpstreamClusterNetworkPolicy, Name: p.Name, UID: string(p.UID)},
		name:       upstreamInternalName(p),
		generation: p.Generation,
		tier:       p.Spec.Tier,
		priority:   float64(p.Spec.Priority),
		peerErrs:   map[string][]error{},
	}
	switch p.Spec.Tier {
	case "Admin":
		sp.tierPriority = tiers.UpstreamAdminPriority
	case "Baseline":
		sp.tierPriority = tiers.UpstreamBaselinePriority
	default:
		sp.tierErr = fmt.Errorf("tier %q is neither Admin nor Baseline", p.Spec.Tier)
	}
	subj := p.Spec.Subject
	switch {
	case subj.Namespaces != nil:
		sp.appliedTo = []crdv1.AppliedTo{{NamespaceSelector: subj.Namespaces}}
	case subj.Pods != nil:
		sp.appliedTo = []crdv1.AppliedTo{{PodSelector: &subj.Pods.PodSelector, NamespaceSelector: &subj.Pods.NamespaceSelector}}
	default:
		sp.appliedTo = []crdv1.AppliedTo{{}} // refused by translateTiered: selects nothing
	}
	for _, d := range []struct {
		name  string
		rules []upstreamRule
		out   *[]crdv1.Rule
	}{{"ingress", p.Spec.Ingress, &sp.ingress}, {"egress", p.Spec.Egress, &sp.egress}} {
		for i, r := range d.rules {
			rule := crdv1.Rule{Name: r.Name, Action: upstreamAction(r.Action), Ports: upstreamPorts(r.Protocols)}
			peers := r.From
			if d.name == "egress" {
				peers = r.To
			}
			var out []crdv1.Peer
			for j, pr := range peers {
				switch {
				case pr.Namespaces != nil:
					out = append(out, crdv1.Peer{NamespaceSelector: pr.Namespaces})
				case pr.Pods != nil:
					out = append(out, crdv1.Peer{PodSelector: &pr.Pods.PodSelector, NamespaceSelector: &pr.Pods.NamespaceSelector})
				case len(pr.Networks) > 0:
					for _, n := range pr.Networks {
						out = append(out, crdv1.Peer{IPBlock: &crdv1.IPBlock{CIDR: n}})
					}
				case pr.Nodes != nil:
					out = append(out, crdv1.Peer{NodeSelector: pr.Nodes})
				case len(pr.DomainNames) > 0 && r.Action == "Accept":
					for _, n := range pr.DomainNames {
						out = append(out, crdv1.Peer{FQDN: n})
					}
				case len(pr.DomainNames) > 0:
					// The API takes domainNames in Accept rules only.
					sp.peerErrs[fmt.Sprintf("%s/%d", d.name, i)] = append(sp.peerErrs[fmt.Sprintf("%s/%d", d.name, i)], fmt.Errorf("peer %d: domainNames in a %s rule (Accept rules only)", j, r.Action))
				default:
					sp.peerErrs[fmt.Sprintf("%s/%d", d.name, i)] = append(sp.peerErrs[fmt.Sprintf("%s/%d", d.name, i)], fmt.Errorf("peer %d: selects nothing", j))
				}
			}
			if d.name == "egress" {
				rule.To = out
			} else {
				rule.From = out
			}
			*d.out = append(*d.out, rule)
		}
	}
	return sp
}

func upstreamAction(a string) crdv1.RuleAction {
	switch a {
	case "Accept":
		return crdv1.RuleActionAllow
	case "Deny":
		return crdv1.RuleActionDrop
	case "Pass":
		return crdv1.RuleActionPass
	}
	return crdv1.RuleAction(a) // unknown: translateTiered installs a Drop
}

// upstreamPorts maps protocols; a named port is the destination pod's
// port of that name, whatever its protocol, so it is asked for in each.
func upstreamPorts(ps []upstreamProtocol) []crdv1.NetworkPolicyPort {
	var out []crdv1.NetworkPolicyPort
	add := func(proto corev1.Protocol, up *upstreamPort) {
		np := crdv1.NetworkPolicyPort{Protocol: &proto}
		if dp := up.DestinationPort; dp != nil {
			switch {
			case dp.Range != nil:
				start, end := intstr.FromInt32(dp.Range.Start), dp.Range.End
				np.Port, np.EndPort = &start, &end
			case dp.Number != 0:
				n := intstr.FromInt32(dp.Number)
				np.Port = &n
			}
		}
		out = append(out, np)
	}
	for _, p := range ps {
		switch {
		case p.TCP != nil:
			add(corev1.ProtocolTCP, p.TCP)
		case p.UDP != nil:
			add(corev1.ProtocolUDP, p.UDP)
		case p.SCTP != nil:
			add(corev1.ProtocolSCTP, p.SCTP)
		case p.DestinationNamedPort != "":
			for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
				name := intstr.FromString(p.DestinationNamedPort)
				out = append(out, crdv1.NetworkPolicyPort{Protocol: &proto, Port: &name})
			}
		}
	}
	return out
}

// upstreamInternalName names the internal policy after the object's UID,
// or a hash of its kind and name when it has none (tests).
func upstreamInternalName(p *upstreamCNP) string {
	if p.UID != "" {
		return string(p.UID)
	}
	sum := sha256.Sum256([]byte("policy.networking.k8s.io/ClusterNetworkPolicy/" + p.Name))
	return hex.EncodeToString(sum[:16])
}
