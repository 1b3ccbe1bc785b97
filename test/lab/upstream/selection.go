// Package upstream drives the Kubernetes project's own network e2e suite
// (e2e.test, built from test/e2e/upstream) against Seine on the lab: it
// reads which specs run and why the others do not
// (test/e2e/upstream/selection.txt), turns that into Ginkgo's focus and
// skip flags, and turns the suite's JSON report into the table of results
// published in test/e2e/upstream/README.md.
package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// Rule is one line of the selection: a focus (the spec runs), a skip (it
// does not) or a known failure (it runs, and when it fails the table gives
// the cause found for it), a regular expression matched against the spec's
// full text, and the reason written in the comment lines above it.
type Rule struct {
	Kind   Kind
	Regex  *regexp.Regexp
	Reason string
	Line   int
}

// Kind is what a rule does.
type Kind string

const (
	Focus Kind = "focus"
	Skip  Kind = "skip"
	Known Kind = "known"
)

// Selection is the ordered list of rules. A spec runs when it matches a
// focus rule and no skip rule, as Ginkgo decides with the flags of Args.
type Selection struct {
	Rules []Rule
}

// ParseSelection reads a selection: lines `focus <regex>`, `skip <regex>`
// or `known <regex>`, each preceded by comment lines (`# ...`) giving its
// reason; a blank line ends a comment block. Every skip and known rule
// needs a reason, and at least one focus must exist; an unknown keyword or
// a regex Go cannot compile is an error naming its line.
func ParseSelection(r io.Reader) (*Selection, error) {
	var (
		sel     Selection
		comment []string
		errs    []error
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			comment = nil
			continue
		case strings.HasPrefix(line, "#"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(line, "#")))
			continue
		}
		word, expr, _ := strings.Cut(line, " ")
		expr = strings.TrimSpace(expr)
		kind := Kind(word)
		if kind != Focus && kind != Skip && kind != Known {
			errs = append(errs, fmt.Errorf("line %d: %q: a rule starts with focus, skip or known", n, word))
			continue
		}
		if expr == "" {
			errs = append(errs, fmt.Errorf("line %d: %s without a regular expression", n, kind))
			continue
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		reason := strings.Join(comment, " ")
		if kind != Focus && reason == "" {
			errs = append(errs, fmt.Errorf("line %d: %s %s has no reason (write it in # lines above the rule)", n, kind, expr))
			continue
		}
		sel.Rules = append(sel.Rules, Rule{Kind: kind, Regex: re, Reason: reason, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if !slices.ContainsFunc(sel.Rules, func(r Rule) bool { return r.Kind == Focus }) {
		return nil, errors.New("selection has no focus rule: it would run every spec of the suite")
	}
	return &sel, nil
}

// Args are e2e.test's flags for the selection: one --ginkgo.focus per
// focus rule and one --ginkgo.skip per skip rule (Ginkgo ORs repeated
// flags of each kind).
func (s *Selection) Args() []string {
	var args []string
	for _, r := range s.Rules {
		switch r.Kind {
		case Focus:
			args = append(args, "--ginkgo.focus="+r.Regex.String())
		case Skip:
			args = append(args, "--ginkgo.skip="+r.Regex.String())
		}
	}
	return args
}

// Decide says whether the spec with this full text runs, and when it does
// not, why: the reason of the first skip rule it matches, or that no focus
// selects it.
func (s *Selection) Decide(text string) (runs bool, why string) {
	focused := false
	for _, r := range s.Rules {
		if r.Kind == Focus && r.Regex.MatchString(text) {
			focused = true
			break
		}
	}
	if !focused {
		return false, "not selected"
	}
	for _, r := range s.Rules {
		if r.Kind == Skip && r.Regex.MatchString(text) {
			return false, r.Reason
		}
	}
	return true, ""
}

// KnownCause is the cause found for a failure of the spec with this full
// text: the reason of the first known rule it matches, or "".
func (s *Selection) KnownCause(text string) string {
	for _, r := range s.Rules {
		if r.Kind == Known && r.Regex.MatchString(text) {
			return r.Reason
		}
	}
	return ""
}

// WithFocus is the selection with its focus rules replaced by one, expr
// (a partial run: one spec or a group), and its skip and known rules kept.
func (s *Selection) WithFocus(expr string) (*Selection, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, err
	}
	out := &Selection{Rules: []Rule{{Kind: Focus, Regex: re}}}
	for _, r := range s.Rules {
		if r.Kind != Focus {
			out.Rules = append(out.Rules, r)
		}
	}
	return out, nil
}

// WithSpecs is the selection with its focus rules replaced by one per
// spec of texts, each matching that spec's whole text only (Ginkgo matches
// a focus against the suite's description, a space and the spec's text),
// and its skip and known rules kept: a run of a list of specs (Part.Pick).
func (s *Selection) WithSpecs(texts []string) *Selection {
	out := &Selection{}
	for _, t := range texts {
		out.Rules = append(out.Rules, Rule{Kind: Focus, Regex: regexp.MustCompile(`(^| )` + regexp.QuoteMeta(t) + `$`)})
	}
	for _, r := range s.Rules {
		if r.Kind != Focus {
			out.Rules = append(out.Rules, r)
		}
	}
	return out
}
