package linux

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/seine-cni/seine/test/ci"
)

// unitSections parses a systemd unit: section -> key -> values (in order).
func unitSections(t *testing.T, unit string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	var sec string
	sc := bufio.NewScanner(strings.NewReader(unit))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = strings.Trim(line, "[]")
			if out[sec] != nil {
				t.Errorf("line %d: section [%s] twice", n, sec)
			}
			out[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("line %d: %q is neither a section nor key=value in one", n, line)
			}
			out[sec][k] = append(out[sec][k], v)
		}
	}
	return out
}

func TestUnitStructure(t *testing.T) {
	u := unitSections(t, SystemdUnit)
	one := func(sec, key string) string {
		t.Helper()
		if v := u[sec][key]; len(v) == 1 {
			return v[0]
		}
		t.Errorf("[%s] %s: %q, want exactly one", sec, key, u[sec][key])
		return ""
	}
	const config = "--config=/etc/seine/seine-agent.yaml"
	if got := one("Service", "ExecStart"); got != "/usr/local/bin/seine-agent run "+config {
		t.Errorf("ExecStart=%s", got)
	}
	if got := one("Service", "ExecStartPre"); got != "/usr/local/bin/seinectl node-prep "+config {
		t.Errorf("ExecStartPre=%s", got)
	}
	for sec, kv := range map[string]map[string]string{
		"Service": {"Type": "simple", "Restart": "on-failure"},
		"Install": {"WantedBy": "multi-user.target"},
		"Unit":    {"StartLimitIntervalSec": "0"},
	} {
		for k, want := range kv {
			if got := one(sec, k); got != want {
				t.Errorf("[%s] %s=%s, want %s", sec, k, got, want)
			}
		}
	}
	if after := one("Unit", "After"); !strings.Contains(after, "openvswitch-switch.service") || !strings.Contains(after, "network-online.target") {
		t.Errorf("After=%s: the agent starts after the network and Open vSwitch", after)
	}
}

// TestGeneratedUnitMatches compares the unit `seine-agent install` writes
// (its golden file, services/seine-agent/testdata) with the reference:
// every setting of the generated unit is the reference's, except the
// command lines, which carry the install's own paths and flags.
func TestGeneratedUnitMatches(t *testing.T) {
	b, err := os.ReadFile("../../services/seine-agent/testdata/seine-agent.service")
	if err != nil {
		t.Fatalf("no generated unit to compare: %v", err)
	}
	ref, gen := unitSections(t, SystemdUnit), unitSections(t, string(b))
	for sec, kv := range gen {
		for k, v := range kv {
			if strings.HasPrefix(k, "Exec") {
				continue
			}
			if fmt.Sprint(ref[sec][k]) != fmt.Sprint(v) {
				t.Errorf("[%s] %s: seine-agent install writes %q, the reference has %q", sec, k, v, ref[sec][k])
			}
		}
	}
	for sec, kv := range ref {
		for k := range kv {
			if _, ok := gen[sec][k]; !ok && !strings.HasPrefix(k, "Exec") && k != "User" {
				t.Errorf("[%s] %s: in the reference, not in what seine-agent install writes", sec, k)
			}
		}
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit, with its
// programs pointing at stand-ins (verify checks that they exist).
func TestUnitVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		ci.Skipf(t, "systemd-analyze is not installed (apt-get install systemd); TestUnitStructure still ran")
	}
	dir := t.TempDir()
	for _, p := range []string{"seinectl", "seine-agent"} {
		writeFile(t, filepath.Join(dir, p), "#!/bin/sh\n", 0o755)
	}
	unit := filepath.Join(dir, "seine-agent.service")
	writeFile(t, unit, strings.ReplaceAll(SystemdUnit, "/usr/local/bin/", dir+"/"), 0o644)
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// fakeSeinectl is a seinectl on PATH that records each call as one line
// and exits with $FAKE_CHECK_RC for check and $FAKE_BUNDLE_RC for bundle.
const fakeSeinectl = `#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case $1 in
check) echo "CHECK  STATUS"; exit "${FAKE_CHECK_RC:-0}" ;;
bundle) exit "${FAKE_BUNDLE_RC:-0}" ;;
supportbundle) exit "${FAKE_SUPPORTBUNDLE_RC:-0}" ;;
esac
exit 99
`

func TestDiagScript(t *testing.T) {
	script, err := filepath.Abs("seine-diag.sh")
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	bundleRe := func(dir string) string {
		return regexp.QuoteMeta("bundle -o "+dir+"/seine-bundle-"+host+"-") + `\d{8}T\d{6}Z\.tar\.gz`
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		noCtl   bool
		wantRC  int
		wantLog []string // regexps, one per call
		wantErr string
	}{
		{
			name: "defaults", wantRC: 0,
			wantLog: []string{
				regexp.QuoteMeta("check --config=/etc/seine/seine-agent.yaml -o wide"),
				bundleRe(".") + regexp.QuoteMeta(" --config=/etc/seine/seine-agent.yaml"),
			},
		},
		{
			name: "all options", args: []string{"-c", "/x/agent.yaml", "-d", "/out", "-k", "/x/kubeconfig", "-l", "/var/log/seine-agent.log"}, wantRC: 0,
			wantLog: []string{
				regexp.QuoteMeta("check --config=/x/agent.yaml -o wide"),
				bundleRe("/out") + regexp.QuoteMeta(" --config=/x/agent.yaml --kubeconfig=/x/kubeconfig --agent-log=/var/log/seine-agent.log"),
			},
		},
		{
			name: "failed checks still bundle", env: []string{"FAKE_CHECK_RC=1"}, wantRC: 1,
			wantLog: []string{"check .*", bundleRe(".") + ".*"}, wantErr: "some checks failed",
		},
		{
			name: "bundle fails", env: []string{"FAKE_BUNDLE_RC=1"}, wantRC: 3,
			wantLog: []string{"check .*", "bundle .*"}, wantErr: "the bundle could not be written",
		},
		{
			name: "cluster", args: []string{"-C"}, wantRC: 0,
			wantLog: []string{regexp.QuoteMeta("supportbundle -d .")},
		},
		{
			name: "cluster, all options", args: []string{"-C", "-d", "/out", "-k", "/x/kubeconfig", "-L", "kubernetes.io/os=windows", "-s", "1h"}, wantRC: 0,
			wantLog: []string{regexp.QuoteMeta("supportbundle -d /out --kubeconfig=/x/kubeconfig -l kubernetes.io/os=windows --since=1h")},
		},
		{
			name: "cluster bundle incomplete", args: []string{"-C"}, env: []string{"FAKE_SUPPORTBUNDLE_RC=1"}, wantRC: 1,
			wantLog: []string{"supportbundle .*"},
		},
		{name: "unknown option", args: []string{"-x"}, wantRC: 2, wantErr: "usage:"},
		{name: "stray argument", args: []string{"now"}, wantRC: 2, wantErr: "usage:"},
		{name: "no seinectl", noCtl: true, wantRC: 2, wantErr: "seinectl is not in PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if !tc.noCtl {
				writeFile(t, filepath.Join(bin, "seinectl"), fakeSeinectl, 0o755)
			}
			log := filepath.Join(dir, "calls.log")
			cmd := exec.Command(script, tc.args...)
			cmd.Dir = dir
			// PATH keeps the system tools (hostname, date) but finds seinectl
			// only in bin.
			cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin", "FAKE_LOG=" + log}, tc.env...)
			out, err := cmd.CombinedOutput()
			rc := 0
			if ee, ok := err.(*exec.ExitError); ok {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if rc != tc.wantRC {
				t.Errorf("exit %d, want %d\n%s", rc, tc.wantRC, out)
			}
			if tc.wantErr != "" && !strings.Contains(string(out), tc.wantErr) {
				t.Errorf("output lacks %q:\n%s", tc.wantErr, out)
			}
			b, _ := os.ReadFile(log)
			calls := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(b) == 0 {
				calls = nil
			}
			if len(calls) != len(tc.wantLog) {
				t.Fatalf("calls:\n%s\nwant %d calls", b, len(tc.wantLog))
			}
			for i, re := range tc.wantLog {
				if !regexp.MustCompile("^" + re + "$").MatchString(calls[i]) {
					t.Errorf("call %d: %q does not match %q", i, calls[i], re)
				}
			}
		})
	}
}

func TestDiagScriptShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		ci.Skipf(t, "shellcheck is not installed (apt-get install shellcheck)")
	}
	if out, err := exec.Command(sc, "--shell=sh", "seine-diag.sh").CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
