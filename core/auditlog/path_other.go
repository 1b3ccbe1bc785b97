//go:build !linux && !windows

package auditlog

// DefaultPath is the policy audit log elsewhere (development builds).
const DefaultPath = "seine-networkpolicy.log"
