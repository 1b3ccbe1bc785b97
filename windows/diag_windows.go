package windows

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/seine-cni/seine/platform"
)

// diagTimeout bounds each OVS query of Collect, so a wedged ovs-vswitchd
// does not hold up the rest of a support bundle.
const diagTimeout = 5 * time.Second

// Collect writes the Windows part of a support bundle
// (platform.Diagnostics): HNS networks and Seine's endpoints as JSON,
// interfaces, routes, permanent neighbours, WinNAT instances, and
// ovs-vswitchd's view (version, datapath ports) over its unixctl named
// pipe. A section that fails says so inline; the error joins the failures.
func (b *Backend) Collect(ctx context.Context, w io.Writer) error {
	sections := platform.NewDiagSections(w)
	section := sections.Add
	section("HNS networks", func(w io.Writer) error {
		ns, err := b.hns.Networks(ctx)
		if err != nil {
			return err
		}
		return writeJSON(w, ns)
	})
	section("HNS endpoints of network "+NetworkName, func(w io.Writer) error {
		id, ok, err := b.networkID(ctx)
		if err != nil || !ok {
			if err == nil {
				fmt.Fprintln(w, "(no network)")
			}
			return err
		}
		eps, err := b.hns.Endpoints(ctx, id)
		if err != nil {
			return err
		}
		return writeJSON(w, eps)
	})
	section("interfaces", func(w io.Writer) error {
		ifs, err := b.stack.Interfaces(ctx)
		for _, i := range ifs {
			fmt.Fprintf(w, "%d: %q mtu %d %s %v\n", i.Index, i.Name, i.MTU, i.MAC, i.IPs)
		}
		return err
	})
	section(fmt.Sprintf("routes (metric %d is Seine's)", RouteMetric), func(w io.Writer) error {
		rs, err := b.stack.Routes(ctx)
		for _, r := range rs {
			fmt.Fprintln(w, r)
		}
		return err
	})
	section("permanent neighbours", func(w io.Writer) error {
		ns, err := b.stack.Neighbors(ctx)
		for _, n := range ns {
			fmt.Fprintln(w, n)
		}
		return err
	})
	section("WinNAT instances", func(w io.Writer) error {
		ns, err := b.nat.NATs(ctx)
		for _, n := range ns {
			fmt.Fprintln(w, n)
		}
		return err
	})
	b.diagOVS(ctx, section)
	return sections.Err()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// diagOVS asks ovs-vswitchd over its unixctl pipe in the OVS run directory.
func (b *Backend) diagOVS(ctx context.Context, section func(string, func(io.Writer) error)) {
	dctx, cancel := context.WithTimeout(ctx, diagTimeout)
	defer cancel()
	c, err := b.appctl(dctx, b.rundir)
	if err != nil {
		section("ovs-vswitchd", func(io.Writer) error { return fmt.Errorf("connect in %s: %w", b.rundir, err) })
		return
	}
	defer c.Close()
	for _, q := range []struct{ title, method string }{
		{"ovs-vswitchd version", "version"},
		{"ovs-vswitchd dpif/show", "dpif/show"},
	} {
		section(q.title, func(w io.Writer) error {
			qctx, cancel := context.WithTimeout(ctx, diagTimeout)
			defer cancel()
			out, err := c.Call(qctx, q.method)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, out)
			return err
		})
	}
}
