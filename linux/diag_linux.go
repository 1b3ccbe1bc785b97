package linux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/platform"
)

// diagTimeout bounds each OVS query of Collect, so a wedged ovs-vswitchd
// does not hold up the rest of a support bundle.
const diagTimeout = 5 * time.Second

// Collect writes the Linux part of a support bundle (platform.Diagnostics):
// links, addresses, routes of every table but local, policy routing rules,
// permanent neighbours, forwarding sysctls, Seine's iptables chains with
// their counters, and the datapath as ovs-vswitchd sees it (ports,
// the routes and neighbours userspace tunnelling uses). A section that fails
// says so inline; the error joins the failures.
func (b *Backend) Collect(ctx context.Context, w io.Writer) error {
	sections := platform.NewDiagSections(w)
	section := sections.Add
	section("links", b.diagLinks)
	section("routes (every table but local; proto 83 is Seine's)", b.diagRoutes)
	section("rules", b.diagRules)
	section("permanent neighbours", b.diagNeighbours)
	section("sysctls", b.diagSysctls)
	for _, fam := range []iptablesFamily{familyV4, familyV6} {
		if fam.ipv6 && !b.host.hasIPv6() {
			continue
		}
		section(fam.save+" -c (Seine's chains, [packets:bytes])", func(w io.Writer) error {
			out, err := b.host.run(ctx, nil, fam.save, "-c")
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, seineRules(string(out)))
			return err
		})
	}
	b.diagOVS(ctx, section)
	return sections.Err()
}

func (b *Backend) diagLinks(w io.Writer) error {
	links, err := retryDump(b.host.nl.LinkList)
	if err != nil {
		return err
	}
	for _, l := range links {
		a := l.Attrs()
		var flags []string
		if a.Flags&net.FlagUp != 0 {
			flags = append(flags, "UP")
		}
		if a.RawFlags&unix.IFF_NOARP != 0 {
			flags = append(flags, "NOARP")
		}
		fmt.Fprintf(w, "%d: %s %s mtu %d <%s> %s", a.Index, a.Name, l.Type(), a.MTU, strings.Join(flags, ","), a.OperState)
		if a.HardwareAddr != nil {
			fmt.Fprintf(w, " %s", a.HardwareAddr)
		}
		if a.ParentIndex != 0 {
			fmt.Fprintf(w, " peer #%d", a.ParentIndex)
		}
		if a.MasterIndex != 0 {
			fmt.Fprintf(w, " master #%d", a.MasterIndex)
		}
		fmt.Fprintln(w)
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return b.host.nl.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return err
		}
		for _, addr := range addrs {
			fmt.Fprintf(w, "    inet %s scope %s\n", addr.IPNet, netlink.Scope(addr.Scope))
		}
	}
	return nil
}

func (b *Backend) diagRoutes(w io.Writer) error {
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return b.host.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return err
	}
	names := b.linkNames()
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		if r.Table != unix.RT_TABLE_MAIN {
			fmt.Fprintf(w, "table %d ", r.Table)
		}
		fmt.Fprintf(w, "%s", routeDst(r))
		if r.Gw != nil {
			fmt.Fprintf(w, " via %s", addrOf(r.Gw))
		}
		fmt.Fprintf(w, " dev %s proto %d", names(r.LinkIndex), r.Protocol)
		if r.Flags&unix.RTNH_F_ONLINK != 0 {
			fmt.Fprint(w, " onlink")
		}
		if r.Src != nil {
			fmt.Fprintf(w, " src %s", r.Src)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// diagRules writes the policy routing rules as `ip rule` does: priority,
// selector, table.
func (b *Backend) diagRules(w io.Writer) error {
	rules, err := retryDump(func() ([]netlink.Rule, error) { return b.host.nl.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return err
	}
	for _, r := range rules {
		from, to := "all", ""
		if r.Src != nil {
			from = r.Src.String()
		}
		if r.Dst != nil {
			to = " to " + r.Dst.String()
		}
		fmt.Fprintf(w, "%d: from %s%s", r.Priority, from, to)
		if r.Mark != 0 {
			fmt.Fprintf(w, " fwmark %#x", r.Mark)
		}
		if r.IifName != "" {
			fmt.Fprintf(w, " iif %s", r.IifName)
		}
		if r.OifName != "" {
			fmt.Fprintf(w, " oif %s", r.OifName)
		}
		fmt.Fprintf(w, " lookup %d\n", r.Table)
	}
	return nil
}

func (b *Backend) diagNeighbours(w io.Writer) error {
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return b.host.nl.NeighList(0, netlink.FAMILY_ALL) })
	if err != nil {
		return err
	}
	names := b.linkNames()
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr != nil {
			fmt.Fprintf(w, "%s lladdr %s dev %s\n", n.IP, n.HardwareAddr, names(n.LinkIndex))
		}
	}
	return nil
}

// linkNames returns a lookup of interface names by index.
func (b *Backend) linkNames() func(int) string {
	links, _ := retryDump(b.host.nl.LinkList)
	return func(i int) string {
		if j := slices.IndexFunc(links, func(l netlink.Link) bool { return l.Attrs().Index == i }); j >= 0 {
			return links[j].Attrs().Name
		}
		return fmt.Sprintf("#%d", i)
	}
}

func (b *Backend) diagSysctls(w io.Writer) error {
	keys := []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"}
	if b.host.hasIPv6() {
		keys = append(keys, "net/ipv6/conf/all/forwarding")
	}
	var errs []error
	for _, k := range keys {
		v, err := b.host.readSysctl(k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "%s = %s\n", strings.ReplaceAll(k, "/", "."), v)
	}
	return errors.Join(errs...)
}

// diagOVS asks ovs-vswitchd over its control socket (no exec of ovs-appctl).
func (b *Backend) diagOVS(ctx context.Context, section func(string, func(io.Writer) error)) {
	var c *appctl.Client
	section("ovs-vswitchd", func(w io.Writer) error {
		ctx, cancel := context.WithTimeout(ctx, diagTimeout)
		defer cancel()
		var err error
		if c, err = appctl.DialTarget(ctx, b.rundir, "ovs-vswitchd"); err != nil {
			return err
		}
		v, err := c.Version(ctx)
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, v)
		return err
	})
	if c == nil {
		return
	}
	defer c.Close()
	for _, q := range []struct {
		title string
		call  func(context.Context) (string, error)
	}{
		{"ovs dpif/show", c.DpifShow},
		{"ovs ovs/route/show", c.OVSRouteShow},
		{"ovs tnl/arp/show", c.TnlARPShow},
	} {
		section(q.title, func(w io.Writer) error {
			ctx, cancel := context.WithTimeout(ctx, diagTimeout)
			defer cancel()
			out, err := q.call(ctx)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, out)
			return err
		})
	}
}
