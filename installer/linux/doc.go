// Package linux holds the files that install and diagnose Seine on a Linux
// node outside Kubernetes: seine-agent.service, the reference systemd unit
// (`seine-agent install` writes an equivalent one), and seine-diag.sh, a thin
// shell wrapper over `seinectl check` and `seinectl bundle`. Both are
// embedded here so that Go code (the service installer) can use the
// reference unit and tests check what is shipped.
package linux

import _ "embed"

// SystemdUnit is seine-agent.service.
//
//go:embed seine-agent.service
var SystemdUnit string

// DiagScript is seine-diag.sh.
//
//go:embed seine-diag.sh
var DiagScript string
