package policy

import (
	"slices"

	"github.com/seine-cni/seine/core/pipeline"
)

// InstalledRules are the rules of the policy set the bridge holds (or the
// agent's next replay installs): policy stats name the flows that count
// for each rule from them (pipeline.PolicyCounters).
func (c *Controller) InstalledRules() []pipeline.PolicyRule {
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	return slices.Clone(c.installed.Rules)
}
