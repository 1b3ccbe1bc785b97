package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/nodecheck"
)

var sampleReport = &nodecheck.Report{Results: []nodecheck.Result{
	{Name: "agent config", OK: true, Target: "/etc/seine/seine-agent.yaml", Detail: "node node-1, bridge br-int, routedHost encap"},
	{Name: "state dir", OK: true, Target: "/var/lib/seine", Detail: "mode 0700", Changed: true},
	{Name: "agent /readyz", Target: "http://127.0.0.1:10350/readyz", Detail: "503 Service Unavailable: not ready: node setup"},
}}

func TestPrintReport(t *testing.T) {
	for _, tc := range []struct {
		format string
		want   string
	}{
		{formatTable, `
CHECK          STATUS  DETAIL
agent config   OK      node node-1, bridge br-int, routedHost encap
state dir      OK      mode 0700
agent /readyz  FAIL    503 Service Unavailable: not ready: node setup
`},
		{formatWide, `
CHECK          STATUS  TARGET                         CHANGED  DETAIL
agent config   OK      /etc/seine/seine-agent.yaml    -        node node-1, bridge br-int, routedHost encap
state dir      OK      /var/lib/seine                 yes      mode 0700
agent /readyz  FAIL    http://127.0.0.1:10350/readyz  -        503 Service Unavailable: not ready: node setup
`},
		{formatYAML, `
results:
- detail: node node-1, bridge br-int, routedHost encap
  name: agent config
  ok: true
  target: /etc/seine/seine-agent.yaml
- changed: true
  detail: mode 0700
  name: state dir
  ok: true
  target: /var/lib/seine
- detail: '503 Service Unavailable: not ready: node setup'
  name: agent /readyz
  ok: false
  target: http://127.0.0.1:10350/readyz
`},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printReport(&buf, tc.format, sampleReport); err != nil {
				t.Fatal(err)
			}
			if got, want := buf.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// JSON and YAML decode back to the same report.
func TestPrintReportRoundTrips(t *testing.T) {
	for _, format := range []string{formatJSON, formatYAML} {
		var buf bytes.Buffer
		if err := printReport(&buf, format, sampleReport); err != nil {
			t.Fatal(err)
		}
		var got nodecheck.Report
		var err error
		if format == formatJSON {
			err = json.Unmarshal(buf.Bytes(), &got)
		} else {
			err = yaml.UnmarshalStrict(buf.Bytes(), &got)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, buf.String())
		}
		if len(got.Results) != 3 || got.Results[1] != sampleReport.Results[1] || got.Results[2] != sampleReport.Results[2] {
			t.Errorf("%s: decoded %+v", format, got)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"check", "-o", "xml"}, `output format "xml"`},
		{[]string{"check", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"get"}, "requires at least 1 arg"},
		{[]string{"get", "frobs"}, `unknown resource "frobs"`},
		{[]string{"get", "pods", "extra"}, "unexpected arguments [extra]"},
		{[]string{"get", "agentinfo", "-o", "xml"}, `output format "xml"`},
		{[]string{"get", "agentinfo", "-o", "custom-columns=NAME"}, `"NAME" is not HEADER:JSONPATH`},
		{[]string{"get", "agentinfo", "-o", "jsonpath={.items[0"}, "-o jsonpath"},
		{[]string{"get", "agentinfo", "node-1", "-l", "a=b"}, "names and a selector"},
		{[]string{"traceflow", "-S", "a/b", "extra"}, "unexpected arguments [extra]"},
		{[]string{"bundle"}, "-o FILE.tar.gz is required"},
		{[]string{"version", "extra"}, "unexpected arguments"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr, nil)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want a usage error (exit 2) containing %q", tc.args, err, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"version", "-o", "json"}, &stdout, &stdout, nil); err != nil {
		t.Fatal(err)
	}
	var v versionInfo
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version != version || !strings.HasPrefix(v.GoVersion, "go") || !strings.Contains(v.Platform, "/") {
		t.Errorf("version %+v", v)
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"version"}, &stdout, &stdout, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "seinectl "+version) {
		t.Errorf("version: %q", stdout.String())
	}
}

func TestPrintPodsAndFlows(t *testing.T) {
	pods := []localPod{{Namespace: "shop", Name: "cart-0", IPs: "10.244.1.2/24", MAC: "8a:43:51:65:72:65", Port: "cart-0-c0ffee", OFPort: 4,
		ContainerID: "c0ffee0123456789abcdef", IfName: "eth0", NetNS: "/var/run/netns/cni-1"}}
	flows := []flowEntry{{Table: 10, Priority: 200, Cookie: "0x1", Packets: 3, Bytes: 294, Flow: "cookie=0x1, table=10, priority=200,ip actions=goto_table:30"}}
	for _, tc := range []struct {
		name string
		fn   func(*bytes.Buffer) error
		want string
	}{
		{"pods", func(b *bytes.Buffer) error { return printPods(b, formatTable, pods) }, `
NAMESPACE  NAME    IPS            PORT           OFPORT
shop       cart-0  10.244.1.2/24  cart-0-c0ffee  4
`},
		{"pods wide", func(b *bytes.Buffer) error { return printPods(b, formatWide, pods) }, `
NAMESPACE  NAME    IPS            MAC                PORT           OFPORT  CONTAINER     IFNAME  NETNS
shop       cart-0  10.244.1.2/24  8a:43:51:65:72:65  cart-0-c0ffee  4       c0ffee012345  eth0    /var/run/netns/cni-1
`},
		{"flows", func(b *bytes.Buffer) error { return printFlows(b, formatTable, flows) }, `
cookie=0x1, table=10, priority=200,ip actions=goto_table:30
`},
		{"flows wide", func(b *bytes.Buffer) error { return printFlows(b, formatWide, flows) }, `
n_packets=3, n_bytes=294, cookie=0x1, table=10, priority=200,ip actions=goto_table:30
`},
		{"flows yaml", func(b *bytes.Buffer) error { return printFlows(b, formatYAML, flows) }, `
- bytes: 294
  cookie: "0x1"
  flow: cookie=0x1, table=10, priority=200,ip actions=goto_table:30
  packets: 3
  priority: 200
  table: 10
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.fn(&buf); err != nil {
				t.Fatal(err)
			}
			if got, want := buf.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
