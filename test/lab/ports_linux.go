package lab

import (
	"fmt"
	"os"
)

// checkHostPorts is CheckPorts against this machine's kernel settings.
func (c *Config) checkHostPorts() error {
	read := func(name string) ([]PortRange, error) {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			return nil, err
		}
		return ParsePortRanges(string(b))
	}
	eph, err := read("ip_local_port_range")
	if err != nil || len(eph) != 1 {
		return fmt.Errorf("the kernel's ephemeral port range: %v", err)
	}
	reserved, err := read("ip_local_reserved_ports")
	if err != nil {
		return fmt.Errorf("the kernel's reserved ports: %w", err)
	}
	return c.CheckPorts(eph[0], reserved)
}
