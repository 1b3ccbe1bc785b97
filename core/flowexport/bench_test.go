package flowexport

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// dumpText is what dpctl/dump-conntrack -m -s prints for n TCP connections
// between 250 client and 250 server pods (userspace datapath format).
func dumpText(n int) string {
	var b strings.Builder
	for i := range n {
		cli := fmt.Sprintf("10.244.%d.%d", 1+i%250/200, 1+i%200)
		srv := fmt.Sprintf("10.244.%d.%d", 3+i/250%250/200, 1+i/250%200)
		sport := 10000 + i%50000
		fmt.Fprintf(&b, "tcp,orig=(src=%s,dst=%s,sport=%d,dport=8080),reply=(src=%s,dst=%s,sport=8080,dport=%d),id=0,zone=65520,status=0,timeout=86390,mark=1,labels=0x0a580af40105,"+
			"protoinfo=(state_orig=ESTABLISHED,state_reply=ESTABLISHED,wscale_orig=7,wscale_reply=7,flags_orig=WINDOW_SCALE,flags_reply=WINDOW_SCALE)\n",
			cli, srv, sport, srv, cli, sport)
	}
	return b.String()
}

// BenchmarkCycle50k: one poll cycle over 50k connections, every one of
// them exported (the worst case: all past their active timeout), against
// parsing the dump alone in the same run. Reports the ratio and the heap
// a followed connection costs.
//
//	go test -run '^$' -bench Cycle50k -benchtime 5x ./core/flowexport
func BenchmarkCycle50k(b *testing.B) {
	const n = 50_000
	text := dumpText(n)
	res := staticResolver{pods: map[netip.Addr]Pod{}}
	for i := range 400 {
		res.pods[netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", 1+i/200, 1+i%200))] = Pod{"default", fmt.Sprintf("client-%d", i), "node-1"}
		res.pods[netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", 3+i/200, 1+i%200))] = Pod{"web", fmt.Sprintf("server-%d", i), "node-2"}
	}
	var parse, cycle time.Duration
	t0 := time.Unix(1_800_000_000, 0)
	// One table across the cycles, as the agent keeps it; every cycle
	// finds every connection past its active timeout.
	tb := Table{Resolver: res, ActiveTimeout: time.Second, IdleTimeout: time.Hour}
	primed, _ := ParseConntrack(text)
	tb.Update(primed, t0)
	now := t0
	var enc []byte
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		conns, err := ParseConntrack(text)
		if err != nil || len(conns) != n {
			b.Fatalf("%d conns, %v", len(conns), err)
		}
		parse += time.Since(start)

		now = now.Add(time.Second)
		start = time.Now()
		conns, _ = ParseConntrack(text)
		recs := tb.Update(conns, now)
		enc = enc[:0]
		for j := range recs {
			if enc, err = appendRecord(enc, &recs[j]); err != nil {
				b.Fatal(err)
			}
		}
		cycle += time.Since(start)
		if len(recs) != n {
			b.Fatalf("%d records", len(recs))
		}
	}
	b.ReportMetric(float64(parse.Milliseconds())/float64(b.N), "parse-ms")
	b.ReportMetric(float64(cycle.Milliseconds())/float64(b.N), "cycle-ms")
	b.ReportMetric(float64(cycle)/float64(parse), "cycle/parse")

	// Heap per followed connection: a table of n, measured after GC.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns, _ := ParseConntrack(text)
	mem := &Table{ActiveTimeout: time.Hour, IdleTimeout: time.Hour}
	mem.Update(conns, t0)
	conns = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/conn")
	runtime.KeepAlive(mem)
}
