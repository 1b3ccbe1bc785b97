package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/bundle"
)

// supportBundleHandler serves the node's part of a cluster support bundle
// (bundle.Path; core/supportbundle collects it): the agent's configuration
// and recent log, its pods, OVS (database, flows with counters, groups),
// the OS backend's diagnostics (routes, rules, iptables or HNS) and the
// agent's heap and goroutine profiles. serveMetrics authorizes it.
func (a *Agent) supportBundleHandler() http.Handler {
	return bundle.Handler(func(since time.Time) []bundle.Source {
		mgmt := "unix:" + filepath.Join(a.cfg.OVS.RunDir, a.cfg.OVS.Bridge+".mgmt")
		srcs := []bundle.Source{
			{Name: "agent/config.yaml", Collect: func(_ context.Context, w io.Writer) error {
				b, err := yaml.Marshal(a.cfg)
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			}},
			bundle.Log("agent/log.txt", a.recentLog, since),
			{Name: "agent/pods.txt", Collect: a.writeBundlePods},
			bundle.OVSDB("ovs/ovsdb.txt", a.cfg.OVS.DBEndpoint, a.log),
			bundle.OpenFlow("ovs/flows.txt", mgmt, ofDialer, a.log),
			bundle.Diagnostics("host/diagnostics.txt", a.backend, nil),
		}
		return append(srcs, bundle.Profiles("pprof")...)
	}, bundle.Options{SourceTimeout: 20 * time.Second})
}

// writeBundlePods lists the pods the agent plugged: name, IP, OVS port.
func (a *Agent) writeBundlePods(_ context.Context, w io.Writer) error {
	a.mu.Lock()
	var rows []string
	for _, p := range a.pods {
		rows = append(rows, fmt.Sprintf("%s/%s\t%s\t%d\t%v", p.ref.Namespace, p.ref.Name, p.port, p.ofport, p.ips))
	}
	a.mu.Unlock()
	slices.Sort(rows)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "# %d pods\nPOD\tOVS PORT\tOFPORT\tIPS\n", len(rows))
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	return tw.Flush()
}
