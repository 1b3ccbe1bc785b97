package traceflowbench

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab"
)

// The agents' side of the traces, from their logs (core/traceflow logs
// each step at Info with its duration): what the watch's timeline cannot
// split.

var logField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

type logLine struct {
	at     time.Time
	node   string
	fields map[string]string
}

func (l logLine) num(k string) float64 {
	v, _ := strconv.ParseFloat(l.fields[k], 64)
	return v
}

// agentLines reads the traceflow lines of every agent's log.
func agentLines(c *lab.Config) ([]logLine, error) {
	var out []logLine
	for _, n := range c.NodeList() {
		p, err := c.LogPath("agent-" + n.Name)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.Contains(l, `msg="traceflow`) {
				continue
			}
			f := map[string]string{}
			for _, m := range logField.FindAllStringSubmatch(l, -1) {
				f[m[1]] = strings.Trim(m[2], `"`)
			}
			at, err := time.Parse(time.RFC3339Nano, f["time"])
			if err != nil {
				continue
			}
			out = append(out, logLine{at: at, node: n.Name, fields: f})
		}
	}
	return out, nil
}

// agentBreakdown is the p50/p95 of the agents' steps for the traces whose
// names start with prefix.
func agentBreakdown(lines []logLine, prefix string) string {
	var dump, cp, bundle, flush, write, pin []float64
	injected := map[string]time.Time{}
	for _, l := range lines {
		if l.fields["msg"] == "traceflow injected" && strings.HasPrefix(l.fields["traceflow"], prefix) {
			injected[l.fields["traceflow"]] = l.at
		}
	}
	for _, l := range lines {
		name := l.fields["traceflow"]
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		switch l.fields["msg"] {
		case "traceflow copies installed":
			dump, cp, bundle = append(dump, l.num("dump_ms")), append(cp, l.num("copy_ms")), append(bundle, l.num("bundle_ms"))
		case "traceflow datapath flushed":
			flush = append(flush, l.num("ms"))
		case "traceflow result written":
			write = append(write, l.num("ms"))
		case "traceflow packet-in":
			if t, ok := injected[name]; ok {
				pin = append(pin, float64(l.at.Sub(t).Microseconds())/1000)
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "  %-48s %8s %8s %5s\n", "agent step", "p50 ms", "p95 ms", "n")
	for _, r := range []struct {
		name string
		v    []float64
	}{
		{"dump the switch's flows", dump}, {"make the copies", cp}, {"bundle of copies", bundle}, {"flush the datapath's cached flows", flush},
		{"status write (server-side apply)", write}, {"injection -> packet-in handled (log times)", pin},
	} {
		s := benchutil.Summarize(r.v)
		fmt.Fprintf(&sb, "  %-48s %8.1f %8.1f %5d\n", r.name, s.Percentile(50), s.Percentile(95), len(r.v))
	}
	return sb.String()
}
