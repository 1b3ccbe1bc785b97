// Package fqdn turns the DNS answers a node's pods receive into the
// addresses of domain-name peers (the upstream ClusterNetworkPolicy's
// egress `domainNames`): patterns as that API defines them, a cache of
// what the answers said for how long, and the parsing of an answer out of
// the frame the switch sent to the agent. Pure: no clock, no I/O; the
// agent passes the time in. README.md has the why and the limits.
package fqdn

import (
	"fmt"
	"regexp"
	"strings"
)

// domainName is the upstream API's DomainName validation
// (sigs.k8s.io/network-policy-api v0.3.0, apis/v1alpha2): an optional
// "*." prefix, two or more labels of letters, digits, '-' and '_' (not at
// a label's ends), an optional trailing dot.
var domainName = regexp.MustCompile(`^(\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`)

// Pattern is a domain name peer: an exact name, or "*." and a suffix that
// stands for one or more whole labels. Its String is canonical (lower
// case, no trailing dot), so two spellings of one pattern compare equal.
type Pattern struct {
	// suffix is the name without "*." in canonical form.
	suffix   string
	wildcard bool
}

// ParsePattern reads a domain name peer as the upstream API defines it:
// `kubernetes.io` matches only kubernetes.io; `*.kubernetes.io` matches
// www.kubernetes.io and latest.blog.kubernetes.io but not kubernetes.io.
// Case does not matter and a trailing dot is the same name (DNS names are
// case-insensitive and always absolute).
func ParsePattern(s string) (Pattern, error) {
	if !domainName.MatchString(s) {
		return Pattern{}, fmt.Errorf("domain name %q: want labels of letters, digits, '-' and '_' (at least two), optionally after \"*.\"", s)
	}
	p := Pattern{suffix: Canonical(s)}
	if rest, ok := strings.CutPrefix(p.suffix, "*."); ok {
		p.suffix, p.wildcard = rest, true
	}
	return p, nil
}

// MustParsePattern is ParsePattern for tests and constants.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Canonical is a DNS name as this package compares it: lower case, no
// trailing dot.
func Canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// Match reports whether the DNS name (in any case, with or without its
// trailing dot) is one the pattern stands for.
func (p Pattern) Match(name string) bool {
	n := Canonical(name)
	if !p.wildcard {
		return n == p.suffix
	}
	head, ok := strings.CutSuffix(n, "."+p.suffix)
	return ok && head != "" && !strings.HasSuffix(head, ".")
}

// String is the pattern in canonical form.
func (p Pattern) String() string {
	if p.wildcard {
		return "*." + p.suffix
	}
	return p.suffix
}

// IsZero reports whether p is the zero Pattern (parsed from nothing).
func (p Pattern) IsZero() bool { return p.suffix == "" }
