package fqdn

import "testing"

// TestPatternMatch: the upstream API's examples (DomainName's comment in
// network-policy-api v0.3.0), case and the trailing dot.
func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"kubernetes.io", "kubernetes.io", true},
		{"kubernetes.io", "www.kubernetes.io", false},
		{"kubernetes.io", "blog.kubernetes.io", false},
		{"kubernetes.io", "my-kubernetes.io", false},
		{"kubernetes.io", "wikipedia.org", false},
		{"blog.kubernetes.io", "blog.kubernetes.io", true},
		{"blog.kubernetes.io", "www.kubernetes.io", false},
		{"blog.kubernetes.io", "kubernetes.io", false},
		{"*.kubernetes.io", "www.kubernetes.io", true},
		{"*.kubernetes.io", "blog.kubernetes.io", true},
		{"*.kubernetes.io", "latest.blog.kubernetes.io", true},
		{"*.kubernetes.io", "kubernetes.io", false},
		{"*.kubernetes.io", "wikipedia.org", false},
		{"*.kubernetes.io", "my-kubernetes.io", false},
		{"*.kubernetes.io", ".kubernetes.io", false},
		{"*.kubernetes.io", "a..kubernetes.io", false},
		// Case does not matter, on either side.
		{"Kubernetes.IO", "kubernetes.io", true},
		{"kubernetes.io", "KUBERNETES.io", true},
		{"*.Kubernetes.io", "WWW.kubernetes.IO", true},
		// A trailing dot is the same name, on either side.
		{"kubernetes.io.", "kubernetes.io", true},
		{"kubernetes.io", "kubernetes.io.", true},
		{"*.kubernetes.io.", "www.kubernetes.io.", true},
		{"*.kubernetes.io", "kubernetes.io.", false},
		{"under_score.example.com", "under_score.example.com", true},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := p.Match(tc.name); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// TestParsePattern: what the upstream API's validation refuses is refused
// here too, and equal patterns in other spellings are one Pattern.
func TestParsePattern(t *testing.T) {
	for _, bad := range []string{"", "com", "*", "*.com", "www.*.example.com", "*example.com", "**.example.com",
		"-a.example.com", "a-.example.com", "a b.example.com", "example..com", ".example.com", "example.com.."} {
		if p, err := ParsePattern(bad); err == nil {
			t.Errorf("%q parsed as %v, want an error", bad, p)
		}
	}
	if a, b := MustParsePattern("*.Example.COM."), MustParsePattern("*.example.com"); a != b || a.String() != "*.example.com" {
		t.Errorf("%v and %v, want both *.example.com", a, b)
	}
	if p := MustParsePattern("example.com"); p.String() != "example.com" || p.IsZero() {
		t.Errorf("got %q", p)
	}
}
