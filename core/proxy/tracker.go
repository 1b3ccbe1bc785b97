package proxy

import (
	"errors"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Config configures a Tracker.
type Config struct {
	// NodeName is this node: endpoints on it are local.
	NodeName string
	// IPv6 makes the tracker follow the IPv6 family; IPv4 otherwise. A
	// dual-stack node runs one tracker per family.
	IPv6 bool
	// ProxyName, when set, also takes Services labelled
	// service.kubernetes.io/service-proxy-name=<ProxyName>; Services with
	// that label naming another proxy are always skipped.
	ProxyName string
}

// Tracker follows Services and EndpointSlices and keeps, per Service, what
// changed since the caller last asked. Every event costs work on its own
// Service only: nothing is rescanned per sync. It is not safe for
// concurrent use; the agent calls it from its informer handlers under one
// lock.
type Tracker struct {
	cfg  Config
	zone string

	services map[string]*serviceInfo // proxied Services by namespace/name
	skipped  map[string]string       // Services seen but not proxied: why
	// slices are each Service's, sorted by name (most Services have one:
	// a slice rather than a map per Service saves ~500 bytes each).
	slices   map[string][]*Slice
	dirty    map[string]bool
	triggers map[string][]time.Time
	errs     map[string]error
}

// New returns an empty tracker.
func New(cfg Config) (*Tracker, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("proxy: node name is required")
	}
	return &Tracker{
		cfg: cfg, services: map[string]*serviceInfo{}, skipped: map[string]string{},
		slices: map[string][]*Slice{}, dirty: map[string]bool{},
		triggers: map[string][]time.Time{}, errs: map[string]error{},
	}, nil
}

func key(namespace, name string) string { return namespace + "/" + name }

// UpdateService records a Service that was added or changed.
func (t *Tracker) UpdateService(s *corev1.Service) {
	k := key(s.Namespace, s.Name)
	t.dirty[k] = true
	delete(t.errs, k)
	if why := skipReason(s, t.cfg.ProxyName); why != "" {
		delete(t.services, k)
		t.skipped[k] = why
		return
	}
	delete(t.skipped, k)
	si, err := parseService(s, t.cfg.IPv6)
	if err != nil {
		delete(t.services, k)
		t.errs[k] = err
		return
	}
	t.services[k] = si
}

// DeleteService forgets a Service.
func (t *Tracker) DeleteService(namespace, name string) {
	k := key(namespace, name)
	t.dirty[k] = true
	delete(t.services, k)
	delete(t.skipped, k)
	delete(t.errs, k)
}

// UpdateSlice records an EndpointSlice that was added or changed (see
// UpdateParsedSlice).
func (t *Tracker) UpdateSlice(s *discoveryv1.EndpointSlice) { t.UpdateParsedSlice(ParseSlice(s)) }

// UpdateParsedSlice records an EndpointSlice that was added or changed, as
// ParseSlice read it; the tracker keeps s itself. Slices that belong to no
// Service (no kubernetes.io/service-name label) are ignored; a slice
// labelled service.kubernetes.io/headless is not the proxy's, as
// kube-proxy watches only slices without that label, and is forgotten (the
// label may come to a slice the proxy took). A slice of the other family
// is kept without endpoints (the family of a slice never changes).
func (t *Tracker) UpdateParsedSlice(s *Slice) {
	if s.Service == "" {
		return
	}
	if s.Headless {
		t.DeleteParsedSlice(s)
		return
	}
	k := key(s.Namespace, s.Service)
	if s.IPv6 != t.cfg.IPv6 {
		c := *s
		c.Ports, c.Endpoints = nil, nil
		s = &c
	}
	l := t.slices[k]
	i, found := slices.BinarySearchFunc(l, s.Name, func(x *Slice, name string) int { return strings.Compare(x.Name, name) })
	if found {
		l[i] = s
	} else {
		t.slices[k] = slices.Insert(l, i, s)
	}
	t.dirty[k] = true
	if !s.Trigger.IsZero() && s.DeletionTimestamp == nil {
		t.triggers[k] = append(t.triggers[k], s.Trigger)
	}
}

// DeleteSlice forgets an EndpointSlice.
func (t *Tracker) DeleteSlice(s *discoveryv1.EndpointSlice) { t.DeleteParsedSlice(ParseSlice(s)) }

// DeleteParsedSlice forgets an EndpointSlice.
func (t *Tracker) DeleteParsedSlice(s *Slice) {
	if s.Service == "" {
		return
	}
	k := key(s.Namespace, s.Service)
	l := t.slices[k]
	if i, found := slices.BinarySearchFunc(l, s.Name, func(x *Slice, name string) int { return strings.Compare(x.Name, name) }); found {
		if l = slices.Delete(l, i, i+1); len(l) == 0 {
			delete(t.slices, k)
		} else {
			t.slices[k] = l
		}
	}
	t.dirty[k] = true
}

// SetNodeLabels records this node's labels; a changed topology zone marks
// every Service changed (their topology-filtered endpoints may differ).
func (t *Tracker) SetNodeLabels(labels map[string]string) {
	z := zoneOf(labels)
	if z == t.zone {
		return
	}
	t.zone = z
	for k := range t.services {
		t.dirty[k] = true
	}
}

// Changed returns the Services that changed since the last call, sorted,
// and forgets them. The caller looks each up with Service and, should it
// fail to apply one, hands it back with Retry.
func (t *Tracker) Changed() []string {
	out := make([]string, 0, len(t.dirty))
	for k := range t.dirty {
		out = append(out, k)
	}
	// A fresh map: clearing one that once held every Service costs as much
	// as its largest size, on every call.
	t.dirty = map[string]bool{}
	slices.Sort(out)
	return out
}

// Pending reports how many Services changed since the last Changed.
func (t *Tracker) Pending() int { return len(t.dirty) }

// Retry marks Services changed again (their application failed).
func (t *Tracker) Retry(keys ...string) {
	for _, k := range keys {
		t.dirty[k] = true
	}
}

// TriggerTimes returns and forgets the last-change-trigger-times of the
// slice updates of a Service since the last call: when the changes that
// are now being programmed were triggered.
func (t *Tracker) TriggerTimes(k string) []time.Time {
	tt := t.triggers[k]
	delete(t.triggers, k)
	return tt
}

// Service is the desired state of the Service named k (namespace/name), or
// nil when this node does nothing for it (deleted, not proxied, or with no
// port of the tracker's family).
func (t *Tracker) Service(k string) *Service {
	si := t.services[k]
	if si == nil || len(si.ports) == 0 {
		return nil
	}
	s := &Service{Namespace: si.namespace, Name: si.name, Ports: make([]Port, len(si.ports))}
	sl := t.slices[k]
	for i, sp := range si.ports {
		p := sp.Port
		categorize(&p, endpointsOf(sl, p.Key(), t.cfg.NodeName), t.cfg.NodeName, t.zone)
		s.Ports[i] = p
	}
	return s
}

// Skipped says why a Service the tracker saw is not proxied: a label or
// type that leaves it to someone else, or an error in its spec. "" when it
// is proxied or unknown.
func (t *Tracker) Skipped(k string) string {
	if err := t.errs[k]; err != nil {
		return "invalid: " + err.Error()
	}
	return t.skipped[k]
}

// Keys lists every proxied Service, sorted (for a full resync).
func (t *Tracker) Keys() []string {
	out := make([]string, 0, len(t.services))
	for k := range t.services {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
