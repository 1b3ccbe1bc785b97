package fqdn

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// rr is one answer record of a test response: "A 1.2.3.4", "AAAA ::1",
// "CNAME target." with a name and a TTL.
type rr struct {
	name, kind, data string
	ttl              uint32
}

// response builds a DNS response to a question for name (type A) with the
// answers, as a resolver sends it.
func response(t *testing.T, rcode dnsmessage.RCode, qname string, answers ...rr) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true, RecursionAvailable: true, RCode: rcode})
	b.EnableCompression()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(qname), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}))
	must(b.StartAnswers())
	for _, a := range answers {
		h := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(a.name), Class: dnsmessage.ClassINET, TTL: a.ttl}
		switch a.kind {
		case "A":
			must(b.AResource(h, dnsmessage.AResource{A: netip.MustParseAddr(a.data).As4()}))
		case "AAAA":
			must(b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(a.data).As16()}))
		case "CNAME":
			must(b.CNAMEResource(h, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(a.data)}))
		case "TXT":
			must(b.TXTResource(h, dnsmessage.TXTResource{TXT: []string{a.data}}))
		}
	}
	msg, err := b.Finish()
	must(err)
	return msg
}

func addrs(c *Cache, p string, now time.Time) string {
	return fmt.Sprint(c.Addrs(MustParsePattern(p), now))
}

func patterns(ps []Pattern) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return fmt.Sprint(s)
}

// TestLearn: the addresses an answer gives for a name a pattern matches,
// through CNAME chains, in any case; nothing for names no pattern matches,
// records nobody asked about, error answers and queries.
func TestLearn(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := &Cache{}
	c.SetPatterns([]Pattern{MustParsePattern("example.com"), MustParsePattern("*.cdn.net"), MustParsePattern("www.example.org")})

	grew, err := c.Learn(t0, response(t, dnsmessage.RCodeSuccess, "Example.COM.",
		rr{"example.com.", "A", "192.0.2.1", 60}, rr{"EXAMPLE.com.", "A", "192.0.2.2", 60}))
	if err != nil || patterns(grew) != "[example.com]" {
		t.Fatalf("learn example.com: %v %v", grew, err)
	}
	if got := addrs(c, "example.com", t0); got != "[192.0.2.1 192.0.2.2]" {
		t.Errorf("example.com: %s", got)
	}
	// The same answer again: nothing grew.
	if grew, _ := c.Learn(t0, response(t, dnsmessage.RCodeSuccess, "example.com.", rr{"example.com.", "A", "192.0.2.1", 60})); grew != nil {
		t.Errorf("a known address grew %v", grew)
	}

	// A CNAME chain: every name of it gets the address; the pattern of the
	// asked name and the pattern of the chain's end both grow.
	grew, err = c.Learn(t0, response(t, dnsmessage.RCodeSuccess, "www.example.org.",
		rr{"www.example.org.", "CNAME", "edge.example.net.", 300},
		rr{"edge.example.net.", "CNAME", "e1.cdn.net.", 300},
		rr{"e1.cdn.net.", "A", "198.51.100.7", 20}))
	if err != nil || patterns(grew) != "[*.cdn.net www.example.org]" {
		t.Fatalf("learn through CNAMEs: %v %v", grew, err)
	}
	if got := addrs(c, "www.example.org", t0); got != "[198.51.100.7]" {
		t.Errorf("www.example.org: %s", got)
	}
	if got := addrs(c, "*.cdn.net", t0); got != "[198.51.100.7]" {
		t.Errorf("*.cdn.net: %s", got)
	}

	// Records about names nobody asked are ignored (a resolver cannot
	// widen a pattern with them), as are names no pattern matches.
	grew, _ = c.Learn(t0, response(t, dnsmessage.RCodeSuccess, "other.org.",
		rr{"other.org.", "A", "203.0.113.9", 60}, rr{"example.com.", "A", "203.0.113.66", 60}, rr{"x.cdn.net.", "A", "203.0.113.67", 60}))
	if grew != nil || addrs(c, "example.com", t0) != "[192.0.2.1 192.0.2.2]" || addrs(c, "*.cdn.net", t0) != "[198.51.100.7]" {
		t.Errorf("an unasked record was learned: grew %v, example.com %s, *.cdn.net %s", grew, addrs(c, "example.com", t0), addrs(c, "*.cdn.net", t0))
	}
	if c.Len() != 4 { // example.com twice, www.example.org, e1.cdn.net (not edge.example.net)
		t.Errorf("Len %d, want 4 (names no pattern matches are not kept)", c.Len())
	}

	// NXDOMAIN teaches nothing; a query is not an answer.
	if grew, err := c.Learn(t0, response(t, dnsmessage.RCodeNameError, "a.cdn.net.", rr{"a.cdn.net.", "A", "203.0.113.1", 60})); grew != nil || err != nil {
		t.Errorf("NXDOMAIN: %v %v", grew, err)
	}
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	qb, _ := q.Pack()
	if _, err := c.Learn(t0, qb); !errors.Is(err, ErrNotResponse) {
		t.Errorf("a query: %v, want ErrNotResponse", err)
	}
	if _, err := c.Learn(t0, []byte{1, 2, 3}); err == nil {
		t.Error("three bytes parsed as a DNS message")
	}

	// Other record types are skipped; AAAA records are learned.
	grew, err = c.Learn(t0, response(t, dnsmessage.RCodeSuccess, "example.com.",
		rr{"example.com.", "TXT", "v=spf1", 60}, rr{"example.com.", "AAAA", "2001:db8::1", 60}))
	if err != nil || patterns(grew) != "[example.com]" || addrs(c, "example.com", t0) != "[192.0.2.1 192.0.2.2 2001:db8::1]" {
		t.Errorf("TXT and AAAA: %v %v %s", grew, err, addrs(c, "example.com", t0))
	}

	// Changing the patterns forgets the names no pattern matches any more.
	c.SetPatterns([]Pattern{MustParsePattern("*.cdn.net")})
	if c.Len() != 1 || addrs(c, "*.cdn.net", t0) != "[198.51.100.7]" || addrs(c, "example.com", t0) != "[]" {
		t.Errorf("after SetPatterns: Len %d, *.cdn.net %s, example.com %s", c.Len(), addrs(c, "*.cdn.net", t0), addrs(c, "example.com", t0))
	}
}

// TestExpiry: an address lives for its answer's TTL, the smallest along
// its CNAME chain, at least MinTTL; a later answer extends it; Expire
// reports the patterns that lost it, NextExpiry when to call it.
func TestExpiry(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := &Cache{MinTTL: 5 * time.Second}
	c.SetPatterns([]Pattern{MustParsePattern("*.example.com")})
	learn := func(at time.Time, q string, answers ...rr) {
		t.Helper()
		if _, err := c.Learn(at, response(t, dnsmessage.RCodeSuccess, q, answers...)); err != nil {
			t.Fatal(err)
		}
	}
	learn(t0, "a.example.com.", rr{"a.example.com.", "A", "192.0.2.1", 30})
	learn(t0, "b.example.com.", rr{"b.example.com.", "A", "192.0.2.2", 0}) // raised to 5 s
	learn(t0, "c.example.com.", rr{"c.example.com.", "CNAME", "d.example.com.", 10}, rr{"d.example.com.", "A", "192.0.2.3", 3600})
	if next, ok := c.NextExpiry(); !ok || !next.Equal(t0.Add(5*time.Second)) {
		t.Errorf("NextExpiry %v %v, want t0+5s", next, ok)
	}
	// Not yet expired addresses are not handed out after their time even
	// before Expire runs.
	if got := addrs(c, "*.example.com", t0.Add(5*time.Second)); got != "[192.0.2.1 192.0.2.3]" {
		t.Errorf("at t0+5s: %s", got)
	}
	if got := patterns(c.Expire(t0.Add(4 * time.Second))); got != "[]" {
		t.Errorf("Expire at t0+4s: %s", got)
	}
	if got := patterns(c.Expire(t0.Add(5 * time.Second))); got != "[*.example.com]" {
		t.Errorf("Expire at t0+5s: %s", got)
	}
	// c.example.com's address lives 10 s (its CNAME's TTL), d's own 3600.
	c.Expire(t0.Add(10 * time.Second))
	if got := addrs(c, "c.example.com", t0.Add(10*time.Second)); got != "[]" {
		t.Errorf("c.example.com at t0+10s: %s (the chain's smallest TTL is 10)", got)
	}
	if got := addrs(c, "d.example.com", t0.Add(10*time.Second)); got != "[192.0.2.3]" {
		t.Errorf("d.example.com at t0+10s: %s", got)
	}
	// A later answer extends a.example.com's address.
	learn(t0.Add(20*time.Second), "a.example.com.", rr{"a.example.com.", "A", "192.0.2.1", 30})
	c.Expire(t0.Add(31 * time.Second))
	if got := addrs(c, "a.example.com", t0.Add(31*time.Second)); got != "[192.0.2.1]" {
		t.Errorf("a.example.com at t0+31s after a second answer: %s", got)
	}
	c.Expire(t0.Add(50 * time.Second))
	if got := addrs(c, "a.example.com", t0.Add(50*time.Second)); got != "[]" {
		t.Errorf("a.example.com at t0+50s: %s", got)
	}
	c.Expire(t0.Add(time.Hour))
	if _, ok := c.NextExpiry(); ok || c.Len() != 0 {
		t.Errorf("after an hour: Len %d", c.Len())
	}
}

// TestMaxEntries: a full cache refuses new pairs and counts them; known
// ones still get their expiry extended.
func TestMaxEntries(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := &Cache{MaxEntries: 3}
	c.SetPatterns([]Pattern{MustParsePattern("*.example.com")})
	for i := range 5 {
		n := fmt.Sprintf("h%d.example.com.", i)
		if _, err := c.Learn(t0, response(t, dnsmessage.RCodeSuccess, n, rr{n, "A", fmt.Sprintf("192.0.2.%d", i+1), 60})); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 3 || c.Refused() != 2 {
		t.Errorf("Len %d, Refused %d; want 3, 2", c.Len(), c.Refused())
	}
	got := c.Addrs(MustParsePattern("*.example.com"), t0)
	if !slices.Equal(got, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")}) {
		t.Errorf("kept %v", got)
	}
}
