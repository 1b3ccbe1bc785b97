package linux

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/seine-cni/seine/platform"
)

var _ platform.HostRulesRemover = (*Backend)(nil)

// allJumps are the jumps to every chain of Seine's: those Sync ensures and
// those of the node-port redirector.
var allJumps = append(append([]jump(nil), jumps...), nodePortsJump, nodePortsMasqJump, hostPortsOutputJump, hostPortsPreroutingJump)

// RemoveHostRules removes what Sync and SyncNodePorts installed
// (platform.HostRulesRemover): per IP family, in one iptables-restore
// transaction, every jump to one of Seine's chains and the chains
// themselves; then every route of the main table marked RouteProtocol.
// The permanent neighbour entries of the service next hops live on the
// gateway port and go with it (NodeTeardown). Every part is attempted.
func (b *Backend) RemoveHostRules(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	families := []iptablesFamily{familyV4}
	if b.host.hasIPv6() {
		families = append(families, familyV6)
	}
	for _, fam := range families {
		saved, err := b.host.run(ctx, nil, fam.save)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		input := removeInput(string(saved))
		if input == "" {
			continue
		}
		if _, err := b.host.run(ctx, []byte(input), fam.restore, "--noflush", "-w", "5"); err != nil {
			errs = append(errs, fmt.Errorf("%w\ninput:\n%s", err, input))
			continue
		}
		b.log.Info("removed Seine's iptables chains", "family", fam.restore)
	}
	if err := b.syncRoutes(platform.HostState{}, 0); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove host rules: %w", err)
	}
	return nil
}

// removeInput is the iptables-restore --noflush input that deletes, from
// saved (one family's iptables-save output), every jump to one of Seine's
// chains, then flushes and deletes the chains; "" when saved has none.
func removeInput(saved string) string {
	var b strings.Builder
	var tables []string
	for _, j := range allJumps {
		if !slices.Contains(tables, j.table) {
			tables = append(tables, j.table)
		}
	}
	for _, table := range tables {
		var lines []string
		for _, j := range allJumps {
			if j.table != table {
				continue
			}
			for _, l := range savedJumps(saved, j) {
				lines = append(lines, "-D "+strings.TrimPrefix(l, "-A "))
			}
		}
		var chains []string // a chain may have several jumps (SEINE-HOSTPORTS)
		for _, j := range allJumps {
			if _, declared := savedChain(saved, table, j.target); j.table == table && declared && !slices.Contains(chains, j.target) {
				chains = append(chains, j.target)
				lines = append(lines, "-F "+j.target, "-X "+j.target)
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "*%s\n%s\nCOMMIT\n", table, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}
