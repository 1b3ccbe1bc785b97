package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// policyState is one Kubernetes NetworkPolicy being computed.
type policyState struct {
	key     string // namespace/name
	obj     *controlplane.NetworkPolicy
	atgs    []*group
	ags     []*group // one entry per reference from a rule peer
	span    *Span
	changed bool // obj replaced since last stored
	stored  bool
	groups  []string // ClusterGroups read by the last translation
}

// syncPolicy recomputes the internal policy of one Kubernetes policy.
func (c *Controller) syncPolicy(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pendingKeys, key)
	if c.afterSync != nil {
		defer c.afterSync(key)
	}
	if name, ok := strings.CutPrefix(key, cnpKeyPrefix); ok {
		c.syncClusterPolicy(key, name)
		return
	}
	if name, ok := strings.CutPrefix(key, snpKeyPrefix); ok {
		c.syncNamespacedPolicy(key, name)
		return
	}
	if name, ok := strings.CutPrefix(key, upstreamKeyPrefix); ok {
		c.syncUpstreamPolicy(key, name)
		return
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		c.log.Error("bad network policy key", "key", key, "error", err)
		return
	}
	np, err := c.npLister.NetworkPolicies(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		c.log.Error("get network policy", "key", key, "error", err)
		return
	}
	if np == nil {
		c.forgetPolicy(key)
		return
	}
	obj, atgs, ags := c.translate(np)
	if obj.TranslationError != "" {
		c.log.Warn("network policy only partly translated; what could not be is denied",
			"key", key, "error", obj.TranslationError)
	}
	c.storePolicy(key, obj, atgs, ags)
}

// forgetPolicy deletes the policy of key, if there is one.
func (c *Controller) forgetPolicy(key string) {
	if p := c.policies[key]; p != nil {
		c.deletePolicy(p)
	}
}

// storePolicy makes obj, with the groups it holds references on, the
// internal policy of key.
func (c *Controller) storePolicy(key string, obj *controlplane.NetworkPolicy, atgs, ags []*group) {
	p := c.policies[key]
	if p == nil {
		p = &policyState{key: key}
		c.policies[key] = p
	} else {
		if p.obj.Name != obj.Name {
			// A new UID under the same key: the old object goes once the
			// new one is published.
			c.forgetName(p)
			p.stored = false
		}
		c.detach(p)
	}
	// An update that changes nothing the agents see (labels, annotations,
	// a resync) keeps the stored object and sends no event.
	if p.obj == nil || !reflect.DeepEqual(p.obj, obj) {
		p.obj, p.changed = obj, true
	}
	c.npNames[p.obj.Name] = p
	p.atgs, p.ags = atgs, ags
	for _, g := range p.atgs {
		g.policies[p]++
	}
	for _, g := range p.ags {
		if g.policies[p]++; g.policies[p] == 1 {
			c.markGroupSpan(g)
		}
	}
	c.dirtyNP[p] = struct{}{}
	c.queue.Add(flushKey)
}

// detach drops p's references on its groups.
func (c *Controller) detach(p *policyState) {
	for _, g := range p.atgs {
		if g.policies[p]--; g.policies[p] == 0 {
			delete(g.policies, p)
			if g.refs > 1 {
				c.markGroupSpan(g) // its span is its policies'
			}
		}
		c.releaseGroup(g)
	}
	for _, g := range p.ags {
		if g.policies[p]--; g.policies[p] == 0 {
			delete(g.policies, p)
			if g.refs > 1 {
				c.markGroupSpan(g)
			}
		}
		c.releaseGroup(g)
	}
}

// deletePolicy forgets p; its stored object is deleted at the end of the
// next flush, after whatever else changed in the same batch is published
// (a policy created alongside may be what keeps p's pods isolated).
func (c *Controller) deletePolicy(p *policyState) {
	c.useGroups(p.key, nil)
	c.detach(p)
	delete(c.policies, p.key)
	delete(c.dirtyNP, p)
	c.forgetName(p)
}

// forgetName schedules the deletion of p's stored object under its current
// name.
func (c *Controller) forgetName(p *policyState) {
	if c.npNames[p.obj.Name] == p {
		delete(c.npNames, p.obj.Name)
	}
	c.goneNP[p.obj.Name] = struct{}{}
	c.queue.Add(flushKey)
}

// internalName names the internal policy after the user policy's UID, or
// after a hash of namespace/name when it has none (as in some tests).
func internalName(np *networkingv1.NetworkPolicy) string {
	if np.UID != "" {
		return string(np.UID)
	}
	sum := sha256.Sum256([]byte(np.Namespace + "/" + np.Name))
	return hex.EncodeToString(sum[:16])
}

// translate builds the internal policy and takes references on its groups.
//
// It never fails: a part of a stored policy it cannot translate (a selector
// or CIDR that an older apiserver accepted and this code cannot parse) is
// denied, never dropped with the rest of the policy, which would open the
// policy's pods. A podSelector it cannot parse applies the policy to every
// pod of the namespace (its pods stay isolated, and so do the others'); a
// peer it cannot parse is left out of its rule, which then allows less
// (nothing, if no peer is left: an empty peer matches no address). The
// policy's TranslationError says what was denied, and its status is Failed.
func (c *Controller) translate(np *networkingv1.NetworkPolicy) (obj *controlplane.NetworkPolicy, atgs, ags []*group) {
	var problems []string
	podSel, err := parseSelector(&np.Spec.PodSelector)
	if err != nil {
		problems = append(problems, fmt.Sprintf("podSelector: %v: applied to every pod of namespace %s instead", err, np.Namespace))
		podSel, _ = parseSelector(nil)
	}
	atg := c.ensureGroup(appliedToKind, &groupSelector{namespace: np.Namespace, pod: podSel})
	atgs = []*group{atg}

	ingress, egress := false, false
	if len(np.Spec.PolicyTypes) == 0 {
		ingress, egress = true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	obj = &controlplane.NetworkPolicy{
		AppliedToGroups: []string{atg.name},
		SourceRef: &controlplane.NetworkPolicyReference{
			Type: controlplane.K8sNetworkPolicy, Namespace: np.Namespace, Name: np.Name, UID: string(np.UID),
		},
	}
	obj.Name, obj.Namespace = internalName(np), np.Namespace
	// The user's generation: stable across controller restarts, and what
	// agents report as realized (NetworkPolicyStatus).
	obj.Generation = np.Generation
	if ingress {
		obj.PolicyTypes = append(obj.PolicyTypes, controlplane.PolicyTypeIngress)
		for i, r := range np.Spec.Ingress {
			peer, errs := c.peer(np.Namespace, r.From, &ags)
			for _, err := range errs {
				problems = append(problems, fmt.Sprintf("ingress rule %d: %v: peer denied", i, err))
			}
			obj.Rules = append(obj.Rules, controlplane.NetworkPolicyRule{
				Direction: controlplane.DirectionIn, From: peer,
				Services: services(r.Ports), Priority: controlplane.DefaultRulePriority,
			})
		}
	}
	if egress {
		obj.PolicyTypes = append(obj.PolicyTypes, controlplane.PolicyTypeEgress)
		for i, r := range np.Spec.Egress {
			allToPods := len(r.To) == 0 && hasNamedPort(r.Ports)
			to := r.To
			if allToPods {
				// Agents resolve an egress named port against the peer
				// members' named ports, never against an ipBlock: to
				// everyone means to every pod as well.
				to = allPods
			}
			peer, errs := c.peer(np.Namespace, to, &ags)
			for _, err := range errs {
				problems = append(problems, fmt.Sprintf("egress rule %d: %v: peer denied", i, err))
			}
			if allToPods {
				peer.IPBlocks = matchAll().IPBlocks
			}
			obj.Rules = append(obj.Rules, controlplane.NetworkPolicyRule{
				Direction: controlplane.DirectionOut, To: peer,
				Services: services(r.Ports), Priority: controlplane.DefaultRulePriority,
			})
		}
	}
	obj.TranslationError = strings.Join(problems, "; ")
	return obj, atgs, ags
}

// matchAll is the peer of a rule without from/to: every address.
func matchAll() controlplane.NetworkPolicyPeer {
	return controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{
		{CIDR: controlplane.IPNet{IP: make(controlplane.IPAddress, 4)}},
		{CIDR: controlplane.IPNet{IP: make(controlplane.IPAddress, 16)}},
	}}
}

// allPods is a peer list selecting every pod of every namespace.
var allPods = []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}, NamespaceSelector: &metav1.LabelSelector{}}}

func hasNamedPort(ports []networkingv1.NetworkPolicyPort) bool {
	for _, p := range ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			return true
		}
	}
	return false
}

// peer translates a rule's peers, appending the AddressGroups it
// references (and holds a reference on) to ags. A peer it cannot translate
// is left out and its error returned.
func (c *Controller) peer(ns string, peers []networkingv1.NetworkPolicyPeer, ags *[]*group) (controlplane.NetworkPolicyPeer, []error) {
	if len(peers) == 0 {
		return matchAll(), nil
	}
	var out controlplane.NetworkPolicyPeer
	var errs []error
	for i, pr := range peers {
		if pr.IPBlock != nil {
			b, err := ipBlock(pr.IPBlock)
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %d: %w", i, err))
				continue
			}
			out.IPBlocks = append(out.IPBlocks, b)
			continue
		}
		podSel, err := parseSelector(pr.PodSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %d: podSelector: %w", i, err))
			continue
		}
		gs := &groupSelector{namespace: ns, pod: podSel}
		if pr.NamespaceSelector != nil {
			if gs.ns, err = parseSelector(pr.NamespaceSelector); err != nil {
				errs = append(errs, fmt.Errorf("peer %d: namespaceSelector: %w", i, err))
				continue
			}
			gs.namespace = ""
		}
		g := c.ensureGroup(addressKind, gs)
		*ags = append(*ags, g)
		dup := false
		for _, name := range out.AddressGroups {
			dup = dup || name == g.name
		}
		if !dup {
			out.AddressGroups = append(out.AddressGroups, g.name)
		}
	}
	return out, errs
}

func ipNet(cidr string) (controlplane.IPNet, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return controlplane.IPNet{}, fmt.Errorf("parse cidr %q: %w", cidr, err)
	}
	p = p.Masked()
	return controlplane.IPNet{IP: p.Addr().AsSlice(), PrefixLength: int32(p.Bits())}, nil
}

func ipBlock(b *networkingv1.IPBlock) (controlplane.IPBlock, error) {
	cidr, err := ipNet(b.CIDR)
	if err != nil {
		return controlplane.IPBlock{}, fmt.Errorf("ipBlock: %w", err)
	}
	out := controlplane.IPBlock{CIDR: cidr}
	for _, e := range b.Except {
		ex, err := ipNet(e)
		if err != nil {
			return controlplane.IPBlock{}, fmt.Errorf("ipBlock except: %w", err)
		}
		out.Except = append(out.Except, ex)
	}
	return out, nil
}

func services(ports []networkingv1.NetworkPolicyPort) []controlplane.Service {
	if len(ports) == 0 {
		return nil
	}
	out := make([]controlplane.Service, 0, len(ports))
	for _, p := range ports {
		s := controlplane.Service{Protocol: controlplane.ProtocolTCP}
		if p.Protocol != nil {
			s.Protocol = controlplane.Protocol(*p.Protocol)
		}
		if p.Port != nil {
			port := *p.Port
			s.Port = &port
			if p.EndPort != nil && port.Type == intstr.Int {
				end := *p.EndPort
				s.EndPort = &end
			}
		}
		out = append(out, s)
	}
	return out
}
