package lab

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of TCP ports.
type PortRange struct{ Lo, Hi int }

func (r PortRange) has(p int) bool { return r.Lo <= p && p <= r.Hi }

// ParsePortRanges reads the kernel's port lists: "32768\t60999"
// (net.ipv4.ip_local_port_range) or "8080,9000-9010" (…ip_local_reserved_ports;
// empty is none).
func ParsePortRanges(s string) ([]PortRange, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if f := strings.Fields(s); len(f) == 2 {
		s = f[0] + "-" + f[1]
	}
	var rs []PortRange
	for _, part := range strings.Split(s, ",") {
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			hi = lo
		}
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || a > b {
			return nil, fmt.Errorf("port list %q: %q is not a port or a range", s, part)
		}
		rs = append(rs, PortRange{a, b})
	}
	return rs, nil
}

// hostPorts are the ports the lab listens on in the machine's own network
// namespace (on 127.0.0.1): kube-apiserver, etcd's client and peer ports.
// The API proxy's listeners are in the nodes' namespaces, seine-controller
// on an address of its own.
func (c *Config) hostPorts() []struct {
	name string
	port int
} {
	return []struct {
		name string
		port int
	}{{"api port", c.APIPort}, {"etcd port", c.EtcdPort}, {"etcd peer port", c.EtcdPort + 1}}
}

// CheckPorts refuses a port of the lab's in the kernel's ephemeral range
// (ip_local_port_range) unless it is reserved (ip_local_reserved_ports):
// any client connection on the machine may hold such a port when the lab
// starts, and the lab then fails with "bind: address already in use" (two
// test labs did so on 2026-12-06, etcd's peer port taken).
func (c *Config) CheckPorts(ephemeral PortRange, reserved []PortRange) error {
	for _, hp := range c.hostPorts() {
		name, p := hp.name, hp.port
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s %d: not a TCP port", name, p)
		}
		if !ephemeral.has(p) {
			continue
		}
		isReserved := false
		for _, r := range reserved {
			isReserved = isReserved || r.has(p)
		}
		if !isReserved {
			return fmt.Errorf("%s %d is in the kernel's ephemeral port range %d-%d (net.ipv4.ip_local_port_range), where any client connection may hold it when the lab starts: choose ports below %d",
				name, p, ephemeral.Lo, ephemeral.Hi, ephemeral.Lo)
		}
	}
	return nil
}
