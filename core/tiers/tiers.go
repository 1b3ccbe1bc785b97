// Package tiers holds the platform-neutral parts of tiered policy: the
// built-in tiers, the evaluation order of every kind of policy, and the
// allocation of OpenFlow priorities that keeps that order on a node. See
// README.md.
package tiers

import (
	"cmp"
	"fmt"
	"math"
)

// Tier is a named tier and its priority (lower is evaluated first).
type Tier struct {
	Name     string
	Priority int32
}

// Priorities of the built-in tiers, of Kubernetes NetworkPolicy's place
// between them, and of the upstream API's tiers.
const (
	EmergencyPriority   int32 = 50
	SecurityOpsPriority int32 = 100
	NetworkOpsPriority  int32 = 150
	PlatformPriority    int32 = 200
	// UpstreamAdminPriority is where the upstream ClusterNetworkPolicy's
	// Admin tier is evaluated; no custom tier takes it.
	UpstreamAdminPriority int32 = 240
	ApplicationPriority   int32 = 250
	// MaxCustomPriority is the highest priority a custom tier may take:
	// custom tiers are evaluated before Kubernetes NetworkPolicy.
	MaxCustomPriority int32 = 252
	// BaselinePriority is the baseline tier's. Tiers from this priority on
	// are evaluated after Kubernetes NetworkPolicy, only for traffic of pods
	// that no NetworkPolicy isolates.
	BaselinePriority int32 = 253
	// UpstreamBaselinePriority is where the upstream ClusterNetworkPolicy's
	// Baseline tier is evaluated.
	UpstreamBaselinePriority int32 = 254
)

// Names of the built-in tiers.
const (
	Emergency   = "emergency"
	SecurityOps = "securityops"
	NetworkOps  = "networkops"
	Platform    = "platform"
	Application = "application"
	Baseline    = "baseline"
	// DefaultTier is the tier of a policy that names none.
	DefaultTier = Application
)

// BuiltIn are the tiers the controller creates and never lets go, in
// evaluation order.
var BuiltIn = []Tier{
	{Emergency, EmergencyPriority},
	{SecurityOps, SecurityOpsPriority},
	{NetworkOps, NetworkOpsPriority},
	{Platform, PlatformPriority},
	{Application, ApplicationPriority},
	{Baseline, BaselinePriority},
}

// IsBuiltIn reports whether name is a built-in tier's.
func IsBuiltIn(name string) bool {
	for _, t := range BuiltIn {
		if t.Name == name {
			return true
		}
	}
	return false
}

// IsBaseline reports whether a tier of priority p is evaluated after
// Kubernetes NetworkPolicy.
func IsBaseline(p int32) bool { return p >= BaselinePriority }

// ValidateCustomPriority checks the priority of a tier that is not built in.
func ValidateCustomPriority(p int32) error {
	if p < 1 || p > MaxCustomPriority {
		return fmt.Errorf("tier priority %d out of range: custom tiers take 1-%d (baseline is %d)", p, MaxCustomPriority, BaselinePriority)
	}
	for _, t := range BuiltIn {
		if t.Priority == p {
			return fmt.Errorf("tier priority %d is the built-in tier %s's", p, t.Name)
		}
	}
	if p == UpstreamAdminPriority {
		return fmt.Errorf("tier priority %d is the upstream ClusterNetworkPolicy's Admin tier's", p)
	}
	return nil
}

// Order is where a rule stands in the evaluation order of its direction:
// tier priority, then policy priority, then policy name (the tie-break of
// equal priorities: deterministic, arbitrary), then the rule's index.
type Order struct {
	Tier     int32
	Priority float64
	Policy   string
	Rule     int32
}

// Compare orders a before b when a is evaluated first (-1).
func (a Order) Compare(b Order) int {
	return cmp.Or(cmp.Compare(a.Tier, b.Tier), cmpFloat(a.Priority, b.Priority),
		cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Rule, b.Rule))
}

func cmpFloat(a, b float64) int {
	if math.IsNaN(a) || math.IsNaN(b) {
		// The API refuses NaN; order it last, deterministically.
		return cmp.Compare(boolInt(math.IsNaN(a)), boolInt(math.IsNaN(b)))
	}
	return cmp.Compare(a, b)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
