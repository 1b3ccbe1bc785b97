package platformtest

import (
	"context"
	"fmt"
	"strings"

	"github.com/seine-cni/seine/platform"
)

// FakeNodePorts is a platform.NodePortRedirector that logs each sync as
// the redirections it holds.
type FakeNodePorts struct {
	recorder
	state platform.NodePortState
}

var _ platform.NodePortRedirector = (*FakeNodePorts)(nil)

// SyncNodePorts validates s and keeps it.
func (f *FakeNodePorts) SyncNodePorts(_ context.Context, s platform.NodePortState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fault("SyncNodePorts"); err != nil {
		f.logf("SyncNodePorts: error: %v", err)
		return err
	}
	if err := s.Validate(); err != nil {
		f.logf("SyncNodePorts: error: %v", err)
		return err
	}
	f.state = s
	f.logf("SyncNodePorts: %s", renderNodePorts(s))
	return nil
}

// Dump renders the current redirections.
func (f *FakeNodePorts) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return renderNodePorts(f.state)
}

func renderNodePorts(s platform.NodePortState) string {
	var parts []string
	for _, p := range s.Ports {
		parts = append(parts, fmt.Sprintf("%s -> %s", p, s.Target))
	}
	if s.Forwarded.IsValid() {
		parts = append(parts, "masquerade forwarded from "+s.Forwarded.String())
	}
	for _, h := range s.HostPorts {
		parts = append(parts, "host port "+h.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
