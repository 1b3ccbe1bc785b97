package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/metrics"
)

// DashboardPath is the Grafana dashboard shipped in installer/.
const dashboardPath = "../../installer/grafana/seine-dashboard.json"

// Dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

var metricName = regexp.MustCompile(`\bseine_[a-z_]+`)

// TestDashboardUsesDefinedMetrics: every expression of the dashboard
// names only metrics of the catalog (a histogram by its _bucket series),
// so renaming a metric without the dashboard fails here; the lab test
// (test/e2e TestDemo/prometheus) runs every expression on a real
// Prometheus.
func TestDashboardUsesDefinedMetrics(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	defs := map[string]metrics.Def{}
	for _, def := range metrics.Catalog() {
		defs[def.Name] = def
	}
	exprs := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: %q names no Seine metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if _, ok := defs[n]; ok {
					continue
				}
				base := strings.TrimSuffix(n, "_bucket")
				if def, ok := defs[base]; ok && def.Kind == metrics.Histogram && base != n {
					continue
				}
				t.Errorf("panel %q: %s is not a metric Seine defines", p.Title, n)
			}
		}
	}
	if exprs < 20 {
		t.Errorf("the dashboard has %d queries", exprs)
	}
}
