package bundle

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/ovs/ovsdb"
)

// OVSDB is the Open_vSwitch database as `ovs-vsctl show` shows it, read
// through ovs/ovsdb: the OVS version, every bridge and its ports with their
// type, OpenFlow port, options, external_ids and errors.
func OVSDB(name, endpoint string, log *slog.Logger) Source {
	return Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		c, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: endpoint, Logger: log})
		if err != nil {
			return err
		}
		defer c.Close()
		return WriteOVSDB(ctx, w, c)
	}}
}

// WriteOVSDB writes what OVSDB collects from a connected client; a
// missing ovs_version is its error, after everything else is written.
func WriteOVSDB(ctx context.Context, w io.Writer, c *ovsdb.Client) error {
	// A database whose version nobody set (ovs-vswitchd started without
	// ovs-ctl, as in the seine-ovs container) still has bridges to show.
	v, verr := c.Version(ctx)
	if verr != nil {
		v = "(unknown)"
	}
	fmt.Fprintf(w, "ovs_version: %s\n", v)
	brs, err := c.Bridges(ctx)
	if err != nil {
		return err
	}
	ports, err := c.ListPorts(ctx, nil)
	if err != nil {
		return err
	}
	slices.SortFunc(brs, func(a, b ovsdb.Bridge) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(ports, func(a, b ovsdb.PortInfo) int { return strings.Compare(a.Name, b.Name) })
	for _, br := range brs {
		fmt.Fprintf(w, "Bridge %s\n", br.Name)
		fmt.Fprintf(w, "    datapath_type: %s\n", cmp.Or(br.DatapathType, "system"))
		if br.FailMode != nil {
			fmt.Fprintf(w, "    fail_mode: %s\n", *br.FailMode)
		}
		if len(br.Protocols) > 0 {
			fmt.Fprintf(w, "    protocols: %s\n", strings.Join(br.Protocols, ","))
		}
		writeMap(w, "    ", "other_config", br.OtherConfig)
		writeMap(w, "    ", "external_ids", br.ExternalIDs)
		for _, p := range ports {
			if p.Bridge == br.Name {
				writePort(w, p)
			}
		}
	}
	for _, p := range ports {
		if p.Bridge == "" {
			fmt.Fprintln(w, "Ports on no bridge")
			writePort(w, p)
		}
	}
	return verr
}

func writePort(w io.Writer, p ovsdb.PortInfo) {
	fmt.Fprintf(w, "    Port %s\n", p.Name)
	fmt.Fprintf(w, "        type: %s, ofport: %d", cmp.Or(string(p.Type), "system"), p.OFPort)
	if p.MAC != "" {
		fmt.Fprintf(w, ", mac: %s", p.MAC)
	}
	fmt.Fprintln(w)
	if p.Error != "" {
		fmt.Fprintf(w, "        error: %q\n", p.Error)
	}
	writeMap(w, "        ", "options", p.Options)
	writeMap(w, "        ", "external_ids", p.ExternalIDs)
}

func writeMap(w io.Writer, indent, name string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kv = append(kv, fmt.Sprintf("%s=%q", k, m[k]))
	}
	fmt.Fprintf(w, "%s%s: {%s}\n", indent, name, strings.Join(kv, ", "))
}

// OpenFlow is the bridge's flows with their counters and its groups, in
// ovs-ofctl dump-flows/dump-groups syntax, read over OpenFlow from addr
// (the bridge's management socket; dial is openflow's default if nil).
func OpenFlow(name, addr string, dial openflow.Dialer, log *slog.Logger) Source {
	return Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		c, err := openflow.Dial(ctx, addr, openflow.Config{Dialer: dial, Logger: log})
		if err != nil {
			return err
		}
		defer c.Close()
		return WriteOpenFlow(ctx, w, c)
	}}
}

// WriteOpenFlow writes what OpenFlow collects from a connection.
func WriteOpenFlow(ctx context.Context, w io.Writer, c *openflow.Conn) error {
	flows, err := c.DumpFlows(ctx, openflow.TableAll, 0, 0)
	if err != nil {
		return fmt.Errorf("dump flows: %w", err)
	}
	fmt.Fprintf(w, "# %d flows\n", len(flows))
	for _, f := range flows {
		fmt.Fprintf(w, "n_packets=%d, n_bytes=%d, %s\n", f.PacketCount, f.ByteCount, f.Flow)
	}
	groups, err := c.GroupDesc(ctx, openflow.GroupAll)
	if err != nil {
		return fmt.Errorf("dump groups: %w", err)
	}
	fmt.Fprintf(w, "\n# %d groups\n", len(groups))
	for _, g := range groups {
		fmt.Fprintln(w, g)
	}
	return nil
}
