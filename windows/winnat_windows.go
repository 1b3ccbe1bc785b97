package windows

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// winNAT is the real natAPI. WinNAT has no Win32 API: its only interface
// is the CIM class MSFT_NetNat (root/StandardCimv2), which Seine would
// need a COM/WMI client for. Until then this seam runs the NetNat cmdlets
// in one PowerShell process per change and, to see what others changed
// (an admin's Remove-NetNat), one Get-NetNat per natMaxAge: in between the
// list read last is kept up to date by Add and Remove, so the agent's
// periodic resyncs run no process. See README.md.
type winNAT struct {
	mu     sync.Mutex
	known  bool
	readAt time.Time
	cache  []natRule
	run    func(ctx context.Context, script string) ([]byte, error)
	now    func() time.Time
}

// natMaxAge is how long the list of WinNAT instances read from the host is
// trusted. A PowerShell process costs about a second of CPU on a Windows
// node; an instance someone removed comes back within natMaxAge plus the
// agent's resync period.
const natMaxAge = 5 * time.Minute

func newWinNAT() *winNAT { return &winNAT{run: runPowerShell, now: time.Now} }

// safeArg is what Seine's NAT names and prefixes are made of; anything else
// never reaches a PowerShell command line.
var safeArg = regexp.MustCompile(`^[A-Za-z0-9._:/-]+$`)

func quote(s string) (string, error) {
	if !safeArg.MatchString(s) {
		return "", fmt.Errorf("refusing %q as a NetNat argument", s)
	}
	return "'" + s + "'", nil
}

func (w *winNAT) NATs(ctx context.Context) ([]natRule, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if w.known && now.Sub(w.readAt) < natMaxAge {
		return slices.Clone(w.cache), nil
	}
	out, err := w.run(ctx, "Get-NetNat | Select-Object Name,InternalIPInterfaceAddressPrefix,ExternalIPInterfaceAddressPrefix | ConvertTo-Json -Compress")
	if err != nil {
		return nil, err
	}
	rules, err := parseNetNat(out)
	if err != nil {
		return nil, err
	}
	w.cache, w.known, w.readAt = rules, true, now
	return slices.Clone(rules), nil
}

// parseNetNat reads ConvertTo-Json's output: nothing, one object or a list.
func parseNetNat(out []byte) ([]natRule, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, nil
	}
	type netNat struct {
		Name                             string
		InternalIPInterfaceAddressPrefix string
		ExternalIPInterfaceAddressPrefix string
	}
	var list []netNat
	if out[0] == '{' {
		list = make([]netNat, 1)
		if err := json.Unmarshal(out, &list[0]); err != nil {
			return nil, fmt.Errorf("Get-NetNat output: %w", err)
		}
	} else if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("Get-NetNat output: %w", err)
	}
	var rules []natRule
	for _, n := range list {
		r := natRule{Name: n.Name}
		r.Internal, _ = netip.ParsePrefix(n.InternalIPInterfaceAddressPrefix)
		r.External, _ = netip.ParsePrefix(n.ExternalIPInterfaceAddressPrefix)
		rules = append(rules, r)
	}
	return rules, nil
}

func (w *winNAT) AddNAT(ctx context.Context, n natRule) error {
	name, err := quote(n.Name)
	if err != nil {
		return err
	}
	internal, err := quote(n.Internal.String())
	if err != nil {
		return err
	}
	script := "New-NetNat -Name " + name + " -InternalIPInterfaceAddressPrefix " + internal
	if n.External.IsValid() {
		external, err := quote(n.External.String())
		if err != nil {
			return err
		}
		script += " -ExternalIPInterfaceAddressPrefix " + external
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.run(ctx, script+" | Out-Null"); err != nil {
		w.known = false // read the truth next time
		return err
	}
	w.cache = append(w.cache, n)
	return nil
}

func (w *winNAT) RemoveNAT(ctx context.Context, name string) error {
	q, err := quote(name)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.run(ctx, "Remove-NetNat -Name "+q+" -Confirm:$false -ErrorAction SilentlyContinue"); err != nil {
		w.known = false
		return err
	}
	w.cache = slices.DeleteFunc(w.cache, func(r natRule) bool { return r.Name == name })
	return nil
}

// scriptDone is printed after every script, so a PowerShell that did not
// run it (a stub, such as Wine's) is not taken for one that found nothing.
const scriptDone = "seine-script-done"

// runPowerShell runs one script and returns its standard output.
func runPowerShell(ctx context.Context, script string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "powershell.exe", "-NoLogo", "-NoProfile", "-NonInteractive",
		"-Command", "$ErrorActionPreference = 'Stop'; "+script+"; '"+scriptDone+"'")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("powershell %q: %w: %s", script, err, strings.TrimSpace(stderr.String()))
	}
	trimmed := bytes.TrimRight(out, "\r\n ")
	if !bytes.HasSuffix(trimmed, []byte(scriptDone)) {
		return nil, fmt.Errorf("powershell %q: the script did not run to its end (output %q, stderr %q)",
			script, out, strings.TrimSpace(stderr.String()))
	}
	return bytes.TrimSuffix(trimmed, []byte(scriptDone)), nil
}
