// Package hostport is the pure half of Seine's hostPort support: the
// mappings a runtime passes in a CNI ADD (the portMappings capability),
// their encoding in a pod port's OVSDB external_ids (so they survive an
// agent restart with the pod's other state), and the node's table of
// mappings, which refuses a second pod on a taken hostIP:hostPort/protocol.
// The agent turns a pod's mappings into flows (core/pipeline, PodFlows) and
// into the host's DNAT of its own connections (platform.NodePortState's
// HostPorts). See README.md.
package hostport

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// IP protocol numbers a mapping may use.
const (
	TCP  uint8 = 6
	UDP  uint8 = 17
	SCTP uint8 = 132
)

var protoNames = map[uint8]string{TCP: "tcp", UDP: "udp", SCTP: "sctp"}

// ErrConflict is wrapped by the error of a mapping another pod holds.
var ErrConflict = errors.New("host port already in use")

// Mapping is one host port of a pod: connections to HostIP:HostPort over
// Protocol go to the pod's address on PodPort.
type Mapping struct {
	Protocol uint8
	// HostIP is the node address the port is on; the zero Addr means every
	// address of the node (and 127.0.0.1 for the node's own connections).
	HostIP   netip.Addr
	HostPort uint16
	PodPort  uint16
}

// String is "tcp/127.0.0.1:54323:8080", "udp/*:53:5353": the encoding of
// one mapping in external_ids.
func (m Mapping) String() string {
	ip := "*"
	if m.HostIP.IsValid() {
		ip = m.HostIP.String()
	}
	return fmt.Sprintf("%s/%s:%d:%d", protoNames[m.Protocol], ip, m.HostPort, m.PodPort)
}

// Overlaps reports whether m and o take the same host port: the same
// protocol and port on the same address, or on every address.
func (m Mapping) Overlaps(o Mapping) bool {
	return m.Protocol == o.Protocol && m.HostPort == o.HostPort &&
		(!m.HostIP.IsValid() || !o.HostIP.IsValid() || m.HostIP == o.HostIP)
}

// Validate checks m for what no node can map.
func (m Mapping) Validate() error {
	if _, ok := protoNames[m.Protocol]; !ok {
		return fmt.Errorf("host port %d: protocol %d: want tcp, udp or sctp", m.HostPort, m.Protocol)
	}
	if m.HostPort == 0 || m.PodPort == 0 {
		return fmt.Errorf("host port %s: ports must be 1-65535", m)
	}
	if m.HostIP.IsValid() && !m.HostIP.Is4() {
		return fmt.Errorf("host port %s: hostIP %s: only IPv4 host addresses are supported", m, m.HostIP)
	}
	if m.HostIP.IsValid() && m.HostIP.IsUnspecified() {
		return fmt.Errorf("host port %s: hostIP 0.0.0.0 is every address: leave it empty", m)
	}
	return nil
}

// runtimeMapping is one entry of the CNI portMappings capability as
// containerd and CRI-O pass it (runtimeConfig.portMappings).
type runtimeMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

// ParseRuntimeConfig decodes runtimeConfig.portMappings (nil raw: none).
// Protocol names are case-insensitive and default to tcp; a hostIP of
// 0.0.0.0 means every address (some runtimes write it so). Mappings of
// one pod may not overlap.
func ParseRuntimeConfig(raw json.RawMessage) ([]Mapping, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var rms []runtimeMapping
	if err := json.Unmarshal(raw, &rms); err != nil {
		return nil, fmt.Errorf("runtimeConfig.portMappings: %w", err)
	}
	var out []Mapping
	for _, rm := range rms {
		m := Mapping{}
		switch strings.ToLower(rm.Protocol) {
		case "", "tcp":
			m.Protocol = TCP
		case "udp":
			m.Protocol = UDP
		case "sctp":
			m.Protocol = SCTP
		default:
			return nil, fmt.Errorf("runtimeConfig.portMappings: protocol %q: want tcp, udp or sctp", rm.Protocol)
		}
		if rm.HostPort < 1 || rm.HostPort > 65535 || rm.ContainerPort < 1 || rm.ContainerPort > 65535 {
			return nil, fmt.Errorf("runtimeConfig.portMappings: hostPort %d, containerPort %d: ports must be 1-65535", rm.HostPort, rm.ContainerPort)
		}
		m.HostPort, m.PodPort = uint16(rm.HostPort), uint16(rm.ContainerPort)
		if rm.HostIP != "" {
			ip, err := netip.ParseAddr(rm.HostIP)
			if err != nil {
				return nil, fmt.Errorf("runtimeConfig.portMappings: hostIP %q: %w", rm.HostIP, err)
			}
			if !ip.IsUnspecified() {
				m.HostIP = ip.Unmap()
			}
		}
		if err := m.Validate(); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, checkOwn(out)
}

// checkOwn refuses a pod whose own mappings overlap.
func checkOwn(ms []Mapping) error {
	for i := range ms {
		for j := range i {
			if ms[i].Overlaps(ms[j]) {
				return fmt.Errorf("host ports %s and %s of one pod: %w", ms[j], ms[i], ErrConflict)
			}
		}
	}
	return nil
}

// Encode is the external_ids value of ms: their strings, comma-separated
// ("" for none).
func Encode(ms []Mapping) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.String()
	}
	return strings.Join(s, ",")
}

// Decode is Encode's inverse.
func Decode(s string) ([]Mapping, error) {
	if s == "" {
		return nil, nil
	}
	var out []Mapping
	for _, f := range strings.Split(s, ",") {
		proto, rest, ok := strings.Cut(f, "/")
		if !ok {
			return nil, fmt.Errorf("host port %q: no protocol", f)
		}
		m := Mapping{}
		for p, n := range protoNames {
			if n == proto {
				m.Protocol = p
			}
		}
		i := strings.LastIndexByte(rest, ':')
		j := strings.LastIndexByte(rest[:max(i, 0)], ':')
		if i < 0 || j < 0 {
			return nil, fmt.Errorf("host port %q: want proto/ip:hostPort:podPort", f)
		}
		hp, err1 := strconv.ParseUint(rest[j+1:i], 10, 16)
		pp, err2 := strconv.ParseUint(rest[i+1:], 10, 16)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("host port %q: %w", f, err)
		}
		m.HostPort, m.PodPort = uint16(hp), uint16(pp)
		if ip := rest[:j]; ip != "*" {
			var err error
			if m.HostIP, err = netip.ParseAddr(ip); err != nil {
				return nil, fmt.Errorf("host port %q: %w", f, err)
			}
		}
		if err := m.Validate(); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Table is the node's host ports by owner (a pod attachment). It is safe
// for concurrent use: an ADD reserves its pod's mappings before it plugs
// the pod, so two concurrent ADDs cannot both take a port.
type Table struct {
	mu     sync.Mutex
	owners map[string]entry
}

type entry struct {
	pod string // namespace/name, for the error another pod gets
	ms  []Mapping
}

// Reserve gives owner (pod "namespace/name") the mappings ms, replacing
// what it held; a mapping another owner holds fails it with an error
// naming that pod and wrapping ErrConflict, and then owner keeps what it
// held.
func (t *Table) Reserve(owner, pod string, ms []Mapping) error {
	if err := checkOwn(ms); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for o, e := range t.owners {
		if o == owner {
			continue
		}
		for _, m := range ms {
			for _, h := range e.ms {
				if m.Overlaps(h) {
					return fmt.Errorf("host port %s: pod %s holds %s on this node: %w", m, e.pod, h, ErrConflict)
				}
			}
		}
	}
	if len(ms) == 0 {
		delete(t.owners, owner)
		return nil
	}
	if t.owners == nil {
		t.owners = map[string]entry{}
	}
	t.owners[owner] = entry{pod: pod, ms: slices.Clone(ms)}
	return nil
}

// Release frees what owner holds (nothing: no-op).
func (t *Table) Release(owner string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.owners, owner)
}
