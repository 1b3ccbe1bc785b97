package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The fabric is a Linux bridge in its own namespace. Each node namespace has
// an eth0 whose peer is a port of that bridge; so has the external host.
// Nothing else is created in the machine's own namespace (seine-controller's
// address: controller_linux.go).
const fabricBridge = "fabric0"

// sh runs a command and returns its combined output in the error.
func sh(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// inNS runs a command inside a named lab namespace.
func (c *Config) inNS(ctx context.Context, ns string, args ...string) (string, error) {
	return sh(ctx, "ip", append([]string{"netns", "exec", c.NetNS(ns)}, args...)...)
}

func (c *Config) createTopology(ctx context.Context) error {
	fabric := c.NetNS("fabric")
	steps := [][]string{
		{"ip", "netns", "add", fabric},
		{"ip", "-n", fabric, "link", "set", "lo", "up"},
		{"ip", "-n", fabric, "link", "add", fabricBridge, "mtu", strconv.Itoa(c.MTU), "type", "bridge"},
		{"ip", "-n", fabric, "link", "set", fabricBridge, "up"},
	}
	for _, s := range steps {
		if _, err := sh(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	hosts := []struct{ name, ip string }{{"ext", c.ExternalIP()}}
	for _, n := range c.NodeList() {
		hosts = append(hosts, struct{ name, ip string }{n.Name, n.IP})
	}
	for _, h := range hosts {
		if err := c.plugHost(ctx, h.name, h.ip); err != nil {
			return fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	return nil
}

// plugHost creates a namespace with eth0 on the fabric.
func (c *Config) plugHost(ctx context.Context, name, ip string) error {
	ns, fabric := c.NetNS(name), c.NetNS("fabric")
	mtu := strconv.Itoa(c.MTU)
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", fabric, "link", "add", name, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", fabric, "link", "set", name, "master", fabricBridge, "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/" + strconv.Itoa(c.FabricBits()), "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "mtu", mtu, "up"},
		// Userspace conntrack in OVS marks TCP with partial checksums
		// invalid: hosts that send into an OVS bridge must checksum in
		// software (see the OVS notes).
		{"ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1"},
	}
	for _, s := range steps {
		if _, err := sh(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// labNamespaces lists the named namespaces with the lab's prefix.
func (c *Config) labNamespaces(ctx context.Context) []string {
	out, _ := sh(ctx, "ip", "netns", "list")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], c.NSPrefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// removeNamespaces kills whatever still runs in the lab's namespaces (ip
// netns del does not) and deletes them, which also deletes their links.
func (c *Config) removeNamespaces(ctx context.Context) error {
	var errs []error
	for _, ns := range c.labNamespaces(ctx) {
		out, _ := sh(ctx, "ip", "netns", "pids", ns)
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil {
				if err := killWait(pid, 5*time.Second); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if _, err := sh(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove namespaces: %v", errs)
	}
	return nil
}
