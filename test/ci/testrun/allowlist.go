package testrun

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// Allowed is one entry of the allowlist: a skip it matches is expected.
//
// The file has one entry per line, after the comment lines that say why
// the skip is right (an entry without them is an error):
//
//	# Why this skip is right, in a sentence or more.
//	<step> <package> <test> <reason>
//
// step is the step of `make test` that ran the test ("go", "wine") or "*";
// package (relative to the module: "ovs/ovsdb") and test are regular
// expressions matched against the whole name; reason, the rest of the
// line, is a regular expression the skip's message must contain.
type Allowed struct {
	Step          string
	Package, Test *regexp.Regexp
	Reason        *regexp.Regexp
	Why           string
	Line          int
	Entry         string // the line as written
}

// ParseAllowlist reads an allowlist.
func ParseAllowlist(r io.Reader) ([]Allowed, error) {
	var out []Allowed
	var why []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "":
			why = nil
			continue
		case strings.HasPrefix(l, "#"):
			why = append(why, strings.TrimSpace(strings.TrimPrefix(l, "#")))
			continue
		}
		f := strings.Fields(l)
		if len(f) < 4 {
			return nil, fmt.Errorf("line %d: want <step> <package> <test> <reason>, got %q", n, l)
		}
		if len(why) == 0 {
			return nil, fmt.Errorf("line %d: no comment above the entry says why the skip is right", n)
		}
		a := Allowed{Step: f[0], Why: strings.Join(why, " "), Line: n, Entry: strings.Join(f, " ")}
		var err error
		if a.Package, err = regexp.Compile("^(?:" + f[1] + ")$"); err != nil {
			return nil, fmt.Errorf("line %d: package: %w", n, err)
		}
		if a.Test, err = regexp.Compile("^(?:" + f[2] + ")$"); err != nil {
			return nil, fmt.Errorf("line %d: test: %w", n, err)
		}
		rest := l // the reason is the line after the first three fields
		for range 3 {
			rest = strings.TrimLeft(rest, " \t")
			rest = rest[strings.IndexAny(rest, " \t"):]
		}
		reason := strings.TrimSpace(rest)
		if a.Reason, err = regexp.Compile(reason); err != nil {
			return nil, fmt.Errorf("line %d: reason: %w", n, err)
		}
		out = append(out, a)
	}
	return out, sc.Err()
}

// Matches reports whether the entry explains s; module is the import path
// prefix package names are relative to.
func (a Allowed) Matches(s Skip, module string) bool {
	pkg := strings.TrimPrefix(strings.TrimPrefix(s.Package, module), "/")
	return (a.Step == "*" || a.Step == s.Step) && a.Package.MatchString(pkg) &&
		a.Test.MatchString(s.Test) && a.Reason.MatchString(s.Reason)
}

// Unexpected returns the skips no entry explains.
func Unexpected(skips []Skip, allow []Allowed, module string) []Skip {
	var out []Skip
	for _, s := range skips {
		ok := false
		for _, a := range allow {
			if a.Matches(s, module) {
				ok = true
				break
			}
		}
		if !ok {
			out = append(out, s)
		}
	}
	return out
}

// Unused returns the entries that explain none of skips.
func Unused(skips []Skip, allow []Allowed, module string) []Allowed {
	var out []Allowed
	for _, a := range allow {
		if !slices.ContainsFunc(skips, func(s Skip) bool { return a.Matches(s, module) }) {
			out = append(out, a)
		}
	}
	return out
}
