package policy

import (
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// For the real-node tests (package policy_test).

// RandomStates is randomStates (random_test.go).
type RandomStates = randomStates

// NewRandomStates returns a seeded State sequence over pods.
func NewRandomStates(seed uint64, pods []Pod) *RandomStates { return newRandomStates(seed, pods) }

// Reference computes policy flows from scratch (reference).
type Reference struct{ ref reference }

// Flows are the flows of s on c's node (its pods and sources now) under
// round, computed from scratch.
func (r *Reference) Flows(c *Controller, s State, round pipeline.Round) ([]*openflow.Flow, error) {
	return r.ref.flows(r.ref.resolve(s, c.node.LocalPods(), c.node.NodeSources()), round)
}

// LineDiff is lineDiff (random_test.go).
func LineDiff(want, got string) string { return lineDiff(want, got) }
