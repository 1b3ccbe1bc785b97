package windows

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// scriptRecorder stands in for PowerShell: it records each script and
// answers Get-NetNat with out.
type scriptRecorder struct {
	scripts []string
	out     string
	fail    error
}

func (r *scriptRecorder) run(_ context.Context, script string) ([]byte, error) {
	r.scripts = append(r.scripts, script)
	if r.fail != nil {
		err := r.fail
		r.fail = nil
		return nil, err
	}
	if strings.HasPrefix(script, "Get-NetNat") {
		return []byte(r.out), nil
	}
	return nil, nil
}

func TestWinNAT(t *testing.T) {
	ctx := context.Background()
	r := &scriptRecorder{out: `{"Name":"docker","InternalIPInterfaceAddressPrefix":"172.17.0.0/16","ExternalIPInterfaceAddressPrefix":null}`}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &winNAT{run: r.run, now: func() time.Time { return clock }}
	got, err := w.NATs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].String() != "docker internal 172.17.0.0/16" {
		t.Errorf("NATs = %v", got)
	}
	n := natRule{Name: "seine-10.244.1.0_24", Internal: netip.MustParsePrefix("10.244.1.0/24"), External: netip.MustParsePrefix("192.168.1.11/32")}
	if err := w.AddNAT(ctx, n); err != nil {
		t.Fatal(err)
	}
	// The list is read once; later reads come from what Seine did.
	got, err = w.NATs(ctx)
	if err != nil || len(got) != 2 || got[1] != n {
		t.Errorf("NATs after AddNAT = %v, %v", got, err)
	}
	if err := w.RemoveNAT(ctx, "docker"); err != nil {
		t.Fatal(err)
	}
	got, _ = w.NATs(ctx)
	if len(got) != 1 || got[0] != n {
		t.Errorf("NATs after RemoveNAT = %v", got)
	}
	diff(t, "scripts", strings.Join(r.scripts, "\n"), `
Get-NetNat | Select-Object Name,InternalIPInterfaceAddressPrefix,ExternalIPInterfaceAddressPrefix | ConvertTo-Json -Compress
New-NetNat -Name 'seine-10.244.1.0_24' -InternalIPInterfaceAddressPrefix '10.244.1.0/24' -ExternalIPInterfaceAddressPrefix '192.168.1.11/32' | Out-Null
Remove-NetNat -Name 'docker' -Confirm:$false -ErrorAction SilentlyContinue`)

	// A failed change makes the next read ask WinNAT again.
	r.scripts, r.fail, r.out = nil, errors.New("access denied"), `[{"Name":"a","InternalIPInterfaceAddressPrefix":"10.1.0.0/16"},{"Name":"b","InternalIPInterfaceAddressPrefix":"10.2.0.0/16"}]`
	if err := w.RemoveNAT(ctx, n.Name); err == nil {
		t.Fatal("RemoveNAT hid the failure")
	}
	if got, _ := w.NATs(ctx); len(got) != 2 || got[1].Name != "b" {
		t.Errorf("NATs after a failure = %v", got)
	}
	if len(r.scripts) != 2 || !strings.HasPrefix(r.scripts[1], "Get-NetNat") {
		t.Errorf("scripts %q", r.scripts)
	}

	// The list read from WinNAT is trusted for natMaxAge: then it is read
	// again, so an instance someone else removed is seen (and re-added by
	// the next Sync).
	r.scripts, r.out = nil, `{"Name":"a","InternalIPInterfaceAddressPrefix":"10.1.0.0/16"}`
	clock = clock.Add(natMaxAge - time.Second)
	if got, _ := w.NATs(ctx); len(got) != 2 || len(r.scripts) != 0 {
		t.Errorf("NATs before natMaxAge = %v after scripts %q, want the cached two and no script", got, r.scripts)
	}
	clock = clock.Add(time.Second)
	if got, _ := w.NATs(ctx); len(got) != 1 || got[0].Name != "a" || len(r.scripts) != 1 {
		t.Errorf("NATs after natMaxAge = %v after scripts %q, want WinNAT read again", got, r.scripts)
	}

	// Nothing but Seine's own characters reaches a command line.
	if err := w.AddNAT(ctx, natRule{Name: "x'; Remove-Item C:\\ -Recurse; '", Internal: n.Internal}); err == nil {
		t.Error("AddNAT accepted a name with quotes")
	}
	if got, err := parseNetNat([]byte("  \r\n")); err != nil || got != nil {
		t.Errorf("parseNetNat(empty) = %v, %v", got, err)
	}
}

func TestRunPowerShell(t *testing.T) {
	out, err := runPowerShell(context.Background(), "Write-Output 'seine'")
	if err != nil {
		// No PowerShell, or one that does not run scripts (Wine's stub):
		// the error must say so rather than pass for empty output.
		if !strings.Contains(err.Error(), "powershell") {
			t.Errorf("error %q does not name powershell", err)
		}
		t.Logf("no working PowerShell here: %v", err)
		return
	}
	if got := strings.TrimSpace(string(out)); got != "seine" {
		t.Errorf("output %q, want %q", got, "seine")
	}
}
