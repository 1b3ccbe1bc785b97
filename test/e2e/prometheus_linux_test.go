package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab"
)

// checkPrometheus runs a real Prometheus server (Debian's package) against
// the lab after the demo's traffic: it scrapes the controller over HTTPS
// as an identity allowed only /metrics, and every agent; every metric of
// the catalog must be there with sane values (and those of features off
// here, Def.When, absent), and every expression of the
// Grafana dashboard must parse and return data. The controller's and the
// agents' /metrics refuse a client without credentials and one without the
// right.
func checkPrometheus(t *testing.T, e *env) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		ci.Skipf(t, "prometheus is not installed (Debian package prometheus; go tool mage deps installs it): %v", err)
	}
	start := time.Now()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := e.c.StartPrometheus(e.ctx, log, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	checkMetricsAuth(t, e, p.Agents)
	// Every target up, and at least three scrapes of each, so that rate()
	// over the dashboard's window has points.
	poll := func(what string, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			ok, why := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s", what, why)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	poll("every target up", func() (bool, string) {
		res := query(t, p.URL, "count(up == 1)")
		want := len(e.c.NodeList()) + 1
		if n := len(res); n == 1 && res[0].value() == float64(want) {
			return true, ""
		}
		return false, fmt.Sprintf("up: %v (want %d targets up); targets: %s", res, want, targets(t, p.URL))
	})
	time.Sleep(3 * lab.ScrapeInterval)

	nodes := float64(len(e.c.NodeList()))
	for _, d := range metrics.Catalog() {
		sel := d.Name
		if d.Kind == metrics.Histogram {
			sel += "_count"
		}
		res := query(t, p.URL, sel)
		if d.When != "" {
			// Off in this lab (flow export has no collector here): no
			// series, as TestFlowExportMetrics checks both ways.
			if len(res) != 0 {
				t.Errorf("%s: %d series, though the lab runs without %q", d.Name, len(res), d.When)
			}
			continue
		}
		if len(res) == 0 {
			t.Errorf("%s: no series in Prometheus", d.Name)
			continue
		}
		for _, s := range res {
			if v := s.value(); math.IsNaN(v) || v < 0 {
				t.Errorf("%s%v = %v", d.Name, s.Metric, v)
			}
		}
	}
	// Sane values after the demo (6 pods, a policy realized and removed).
	for expr, ok := range map[string]func(float64) bool{
		"sum(seine_agent_local_pods)":                                                                   func(v float64) bool { return v >= 6 },
		"sum(seine_agent_openflow_connected)":                                                           func(v float64) bool { return v == nodes },
		"sum(seine_agent_ovsdb_connected)":                                                              func(v float64) bool { return v == nodes },
		"seine_controller_connected_agents":                                                             func(v float64) bool { return v == nodes },
		`sum(seine_agent_cni_requests_total{command="ADD",result="success"})`:                           func(v float64) bool { return v >= 6 },
		"min(seine_agent_ovs_flows)":                                                                    func(v float64) bool { return v > 50 },
		`min(seine_agent_ovs_table_flows{table="Classifier"})`:                                          func(v float64) bool { return v > 0 },
		"min(seine_agent_conntrack_limit)":                                                              func(v float64) bool { return v > 0 },
		`count(seine_agent_ovs_interface_bytes_total{kind="tunnel"} > 0)`:                               func(v float64) bool { return v == 2*nodes },
		"sum(seine_agent_ovs_scrape_errors_total)":                                                      func(v float64) bool { return v == 0 },
		`sum(seine_agent_ovs_flow_operation_errors_total)`:                                              func(v float64) bool { return v == 0 },
		`sum(seine_agent_ovs_flow_mods_total)`:                                                          func(v float64) bool { return v > 150 },
		"seine_controller_realization_lag_seconds_count":                                                func(v float64) bool { return v >= 1 },
		"seine_controller_realization_lag_seconds_sum / seine_controller_realization_lag_seconds_count": func(v float64) bool { return v < 30 },
		`seine_controller_objects{kind="networkpolicy"}`:                                                func(v float64) bool { return v == 0 },
		"seine_controller_networkpolicy_syncs_total":                                                    func(v float64) bool { return v >= 2 },
	} {
		res := query(t, p.URL, expr)
		if len(res) != 1 || !ok(res[0].value()) {
			t.Errorf("%s = %v", expr, res)
		}
	}

	b, err := os.ReadFile("../../installer/grafana/seine-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, pn := range dash.Panels {
		for _, tg := range pn.Targets {
			n++
			expr := dashboardExpr(tg.Expr)
			if res := query(t, p.URL, expr); len(res) == 0 {
				t.Errorf("dashboard panel %q: %s returned no data", pn.Title, expr)
			}
		}
	}
	t.Logf("Prometheus checked %d metrics and %d dashboard queries in %v", len(metrics.Catalog()), n, time.Since(start).Round(time.Millisecond))
}

// dashboardExpr is expr as Grafana sends it with every node selected and
// a one-minute rate interval.
func dashboardExpr(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$node", ".*").Replace(expr)
}

// checkMetricsAuth: the controller's and the agents' /metrics want a
// client the kube-apiserver authenticates and authorizes for it.
func checkMetricsAuth(t *testing.T, e *env, agents map[string]string) {
	ca, err := os.ReadFile(filepath.Join(e.c.PKIDir(), "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// Agents sign their own certificates in the lab.
	unverified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(client *http.Client, url, who string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if who != "" {
			kc, err := clientcmd.LoadFromFile(e.c.KubeconfigPath(who))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range kc.AuthInfos {
				req.Header.Set("Authorization", "Bearer "+a.Token)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	targets := map[string]*http.Client{e.c.ControllerURL() + "/metrics": verified}
	for _, addr := range agents {
		targets["https://"+addr+"/metrics"] = unverified
	}
	for url, client := range targets {
		// The controller takes a request without credentials as
		// system:anonymous, which may not get /metrics (403); an agent
		// answers it 401.
		if got := get(client, url, ""); got != http.StatusForbidden && got != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d, want 401 or 403", url, got)
		}
		for who, want := range map[string]int{"seine-agent": http.StatusForbidden, "prometheus": http.StatusOK} {
			if got := get(client, url, who); got != want {
				t.Errorf("%s as %q: %d, want %d", url, who, got, want)
			}
		}
	}
}

// sample is one series of an instant query's result.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) value() float64 {
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// query runs an instant query; a query Prometheus refuses (it does not
// parse) fails the test.
func query(t *testing.T, base, expr string) []sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Status, Error string
		Data          struct {
			ResultType string   `json:"resultType"`
			Result     []sample `json:"result"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	if out.Status != "success" {
		t.Fatalf("query %s: %s %s", expr, out.Status, out.Error)
	}
	return out.Data.Result
}

var errorField = regexp.MustCompile(`"lastError":"[^"]+"`)

// targets summarizes Prometheus' targets' errors.
func targets(t *testing.T, base string) string {
	resp, err := http.Get(base + "/api/v1/targets")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	n, _ := resp.Body.Read(buf)
	for _, m := range errorField.FindAllString(string(buf[:n]), -1) {
		b.WriteString(m + "; ")
	}
	return b.String()
}
