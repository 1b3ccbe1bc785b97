package controller

import (
	"fmt"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

func TestIndexSelectsLikeTheSelector(t *testing.T) {
	x := newLabelIndex()
	n := x.ns("ns")
	for name, l := range map[string]map[string]string{
		"a": {"app": "web", "tier": "fe"},
		"b": {"app": "web"},
		"c": {"app": "db", "tier": "be"},
		"d": {},
	} {
		n.indexPod(&podEntry{name: name, namespace: "ns", labels: l, eligible: true})
	}
	n.indexPod(&podEntry{name: "ineligible", namespace: "ns", labels: map[string]string{"app": "web"}})
	op := func(key string, o metav1.LabelSelectorOperator, v ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: o, Values: v}
	}
	for _, tc := range []struct {
		name string
		sel  *metav1.LabelSelector
		want []string
	}{
		{"nil selects all", nil, []string{"a", "b", "c", "d"}},
		{"matchLabels", sel("app", "web"), []string{"a", "b"}},
		{"two labels intersect", sel("app", "web", "tier", "fe"), []string{"a"}},
		{"missing label", sel("app", "none"), nil},
		{"In", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{op("app", metav1.LabelSelectorOpIn, "web", "db")}}, []string{"a", "b", "c"}},
		{"NotIn", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{op("app", metav1.LabelSelectorOpNotIn, "web")}}, []string{"c", "d"}},
		{"Exists", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{op("tier", metav1.LabelSelectorOpExists)}}, []string{"a", "c"}},
		{"DoesNotExist with matchLabels", &metav1.LabelSelector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []metav1.LabelSelectorRequirement{op("tier", metav1.LabelSelectorOpDoesNotExist)},
		}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSelector(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			n.eachPod(s, func(p *podEntry) { got = append(got, p.name) })
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := parseSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{op("app", "Bogus")}}); err == nil {
		t.Error("invalid operator accepted")
	}
}

func TestGroupNamesAreNormalized(t *testing.T) {
	a, _ := parseSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"x": "1", "y": "2"}})
	b, _ := parseSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "y", Operator: metav1.LabelSelectorOpIn, Values: []string{"2"}},
		{Key: "x", Operator: metav1.LabelSelectorOpIn, Values: []string{"1"}},
	}})
	c, _ := parseSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "x", Operator: metav1.LabelSelectorOpIn, Values: []string{"1"}},
		{Key: "y", Operator: metav1.LabelSelectorOpIn, Values: []string{"2"}},
	}})
	nb := groupName((&groupSelector{namespace: "ns", pod: b}).normalized())
	nc := groupName((&groupSelector{namespace: "ns", pod: c}).normalized())
	if nb != nc {
		t.Errorf("same selector in another order has another name: %s vs %s", nb, nc)
	}
	na := groupName((&groupSelector{namespace: "ns", pod: a}).normalized())
	other := groupName((&groupSelector{namespace: "other", pod: a}).normalized())
	cluster := groupName((&groupSelector{pod: a, ns: a}).normalized())
	if na == other || na == cluster || other == cluster {
		t.Errorf("different selections share a name: %s %s %s", na, other, cluster)
	}
}

func TestStoreWatch(t *testing.T) {
	s := NewStore[*controlplane.AddressGroup]()
	w, v := s.Watch(2)
	if v != 0 {
		t.Fatalf("start version %d", v)
	}
	s.Set("a", &controlplane.AddressGroup{}, nil)
	s.Set("a", &controlplane.AddressGroup{}, nil)
	if e := <-w.Events(); e.Type != Added || e.Version != 1 {
		t.Errorf("first event %+v", e)
	}
	if e := <-w.Events(); e.Type != Modified || e.Version != 2 {
		t.Errorf("second event %+v", e)
	}
	s.Delete("missing")
	s.Delete("a")
	s.Set("b", &controlplane.AddressGroup{}, nil)
	s.Set("c", &controlplane.AddressGroup{}, nil) // overflows the buffer of 2
	var got []EventType
	for e := range w.Events() {
		got = append(got, e.Type)
	}
	if !slices.Equal(got, []EventType{Deleted, Added}) {
		t.Errorf("events before the slow watcher was closed: %v", got)
	}
	if s.Version() != 5 || s.Len() != 2 {
		t.Errorf("version %d len %d", s.Version(), s.Len())
	}
	w.Stop() // already closed: no panic
}

// matchLabels selectors skip parsing; they must give what parsing gives: the
// same text (group names are hashes of it), required labels and matches.
func TestMatchLabelsSelectorAsParsed(t *testing.T) {
	sets := []map[string]string{
		nil, {}, {"app": "web"}, {"b": "2", "a": "1", "c": "3"}, {"example.com/tier": "db", "app": ""},
	}
	objs := []map[string]string{nil, {"app": "web"}, {"a": "1", "b": "2", "c": "3"}, {"example.com/tier": "db", "app": ""}, {"app": "db"}}
	for _, ml := range sets {
		ls := &metav1.LabelSelector{MatchLabels: ml}
		got, err := parseSelector(ls)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			t.Fatal(err)
		}
		if got.sel.String() != parsed.String() {
			t.Errorf("%v: text %q, parsing gives %q", ml, got.sel.String(), parsed.String())
		}
		var want []kv
		reqs, _ := parsed.Requirements()
		for _, r := range reqs {
			want = append(want, kv{r.Key(), r.Values().List()[0]})
		}
		if fmt.Sprint(got.required) != fmt.Sprint(want) {
			t.Errorf("%v: required %v, want %v", ml, got.required, want)
		}
		for _, o := range objs {
			if got.matches(o) != parsed.Matches(labels.Set(o)) {
				t.Errorf("%v on %v: matches %v, parsing gives %v", ml, o, got.matches(o), parsed.Matches(labels.Set(o)))
			}
		}
	}
}
