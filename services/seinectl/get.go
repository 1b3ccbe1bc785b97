package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/nodecheck"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/ovs/ovsdb"
)

// The external_ids the agent writes on a pod's OVS port (core/agent): the
// node's source of truth about its pods.
const (
	extType, extTypePod = "seine-type", "pod"
	extNamespace        = "k8s-pod-namespace"
	extName             = "k8s-pod-name"
	extContainerID      = "container-id"
	extIfName           = "ifname"
	extIP               = "ip-address"
	extMAC              = "mac-address"
	extNetNS            = "netns"
)

// localPod is a pod attached on this node, as `seinectl get pods` shows it.
type localPod struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	IPs         string `json:"ips"`
	MAC         string `json:"mac"`
	Port        string `json:"port"`
	OFPort      int    `json:"ofport"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	NetNS       string `json:"netns"`
}

// flowEntry is one flow, as `seinectl get flows -o json|yaml` shows it.
type flowEntry struct {
	Table    uint8  `json:"table"`
	Priority uint16 `json:"priority"`
	Cookie   string `json:"cookie"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	Flow     string `json:"flow"`
}

const getTimeout = 10 * time.Second

// getCmd is `seinectl get`: this node's pods and flows from its switch
// (--config), or Seine's objects from the cluster (getcluster.go).
func (c *cli) getCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get RESOURCE [NAME...]",
		Short: "Show this node's pods or flows, or Seine's objects in the cluster",
		Long: `Resources of this node (read from its Open vSwitch, --config names the agent's
configuration):
  pods      the node's pods, from their OVS ports
  flows     the bridge's flows in pipeline order (--table N: one table)

Resources of the cluster (through the kube-apiserver, kubeconfig flags as kubectl's):
` + clusterResourceHelp(),
		Example: `  seinectl get flows --table 10 -o wide
  seinectl get agentinfo
  seinectl get networkpolicy -o yaml
  seinectl get networkpolicystats -A
  seinectl get traceflow tf-1 -o jsonpath='{.status.phase}'
  kubectl seine get controllerinfo -o custom-columns=NAME:.metadata.name,AGENTS:.status.connectedAgents`,
		Args:      cobra.MinimumNArgs(1),
		ValidArgs: getResources(),
	}
	f := cmd.Flags()
	out := f.StringP("output", "o", "", "output format: wide, json, yaml, name, jsonpath=..., custom-columns=... (the node's pods and flows: wide, json, yaml)")
	config := f.String("config", defaults.configPath, "pods, flows: the agent's configuration file")
	table := f.Int("table", -1, "flows: only this table")
	var co clusterGetOptions
	f.BoolVarP(&co.allNamespaces, "all-namespaces", "A", false, "namespaced resources: list across all namespaces")
	f.StringVarP(&co.selector, "selector", "l", "", "label selector")
	f.BoolVar(&co.noHeaders, "no-headers", false, "tables: print no header")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		what, names := args[0], args[1:]
		if what != "pods" && what != "flows" {
			co.output = *out
			return c.getCluster(cmd.Context(), what, names, co)
		}
		if len(names) > 0 {
			return usageErr("get %s: unexpected arguments %v", what, names)
		}
		format := *out
		if format == "" {
			format = formatTable
		}
		if err := checkFormat(format, true); err != nil {
			return err
		}
		if what == "flows" && *table > 255 {
			return usageErr("get flows: table %d is not an OpenFlow table", *table)
		}
		cfg, err := agent.LoadConfig(*config)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), getTimeout)
		defer cancel()
		if what == "pods" {
			pods, err := listPods(ctx, cfg, c.log)
			if err != nil {
				return err
			}
			return printPods(c.stdout, format, pods)
		}
		flows, err := listFlows(ctx, cfg, *table, c.log)
		if err != nil {
			return err
		}
		return printFlows(c.stdout, format, flows)
	}
	return cmd
}

func listPods(ctx context.Context, cfg *agent.Config, log *slog.Logger) ([]localPod, error) {
	c, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: cfg.OVS.DBEndpoint, Logger: log})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ports, err := c.ListPorts(ctx, map[string]string{extType: extTypePod})
	if err != nil {
		return nil, err
	}
	pods := make([]localPod, 0, len(ports))
	for _, p := range ports {
		ids := p.ExternalIDs
		pods = append(pods, localPod{
			Namespace: ids[extNamespace], Name: ids[extName], IPs: ids[extIP], MAC: ids[extMAC],
			Port: p.Name, OFPort: p.OFPort, ContainerID: ids[extContainerID], IfName: ids[extIfName], NetNS: ids[extNetNS],
		})
	}
	slices.SortFunc(pods, func(a, b localPod) int {
		return strings.Compare(a.Namespace+"/"+a.Name+"/"+a.ContainerID, b.Namespace+"/"+b.Name+"/"+b.ContainerID)
	})
	return pods, nil
}

func printPods(w io.Writer, format string, pods []localPod) error {
	if format == formatJSON || format == formatYAML {
		return printStructured(w, format, pods)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	wide := format == formatWide
	if wide {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tIPS\tMAC\tPORT\tOFPORT\tCONTAINER\tIFNAME\tNETNS")
	} else {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tIPS\tPORT\tOFPORT")
	}
	for _, p := range pods {
		if wide {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%.12s\t%s\t%s\n", p.Namespace, p.Name, p.IPs, p.MAC, p.Port, p.OFPort, p.ContainerID, p.IfName, p.NetNS)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", p.Namespace, p.Name, p.IPs, p.Port, p.OFPort)
		}
	}
	return tw.Flush()
}

func listFlows(ctx context.Context, cfg *agent.Config, table int, log *slog.Logger) ([]flowEntry, error) {
	c, err := openflow.Dial(ctx, nodecheck.MgmtAddr(cfg), openflow.Config{Dialer: openflowDialer, Logger: log})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	t := openflow.TableAll
	if table >= 0 {
		t = uint8(table)
	}
	stats, err := c.DumpFlows(ctx, t, 0, 0)
	if err != nil {
		return nil, err
	}
	flows := make([]flowEntry, 0, len(stats))
	for _, s := range stats {
		flows = append(flows, flowEntry{
			Table: s.Flow.TableID(), Priority: s.Flow.Priority(), Cookie: "0x" + strconv.FormatUint(s.Flow.CookieValue(), 16),
			Packets: s.PacketCount, Bytes: s.ByteCount, Flow: s.Flow.String(),
		})
	}
	// The pipeline's order: by table, then by priority, highest first.
	slices.SortStableFunc(flows, func(a, b flowEntry) int {
		if a.Table != b.Table {
			return int(a.Table) - int(b.Table)
		}
		return int(b.Priority) - int(a.Priority)
	})
	return flows, nil
}

// printFlows prints flows as ovs-ofctl dump-flows does (table), with their
// counters first (wide), or as objects.
func printFlows(w io.Writer, format string, flows []flowEntry) error {
	switch format {
	case formatJSON, formatYAML:
		return printStructured(w, format, flows)
	case formatWide:
		for _, f := range flows {
			fmt.Fprintf(w, "n_packets=%d, n_bytes=%d, %s\n", f.Packets, f.Bytes, f.Flow)
		}
	default:
		for _, f := range flows {
			fmt.Fprintln(w, f.Flow)
		}
	}
	return nil
}
