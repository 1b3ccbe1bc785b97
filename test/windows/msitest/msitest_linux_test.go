package msitest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/installer/windows/msi"
	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/windows/wine"
)

// unavailable skips the test with reason, or fails it under CI, where the
// tools must be there.
func unavailable(t *testing.T, reason string) {
	t.Helper()
	ci.Skipf(t, "%s", reason)
}

// needTools makes sure the MSI tools are there, installing them with apt-get
// when running as root.
func needTools(ctx context.Context, t *testing.T, log *slog.Logger) {
	t.Helper()
	pkgs := map[string]string{"wixl": "wixl", "msibuild": "msitools", "osslsigncode": "osslsigncode", "openssl": "openssl"}
	var missing []string
	for tool, pkg := range pkgs {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Geteuid() != 0 {
		unavailable(t, fmt.Sprintf("%s missing and not root to apt-get install them", strings.Join(missing, ", ")))
	}
	log.Info("installing with apt-get", "packages", missing)
	for _, args := range [][]string{{"update"}, append([]string{"install", "-y", "--no-install-recommends"}, missing...)} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			unavailable(t, fmt.Sprintf("apt-get %s: %v\n%s", args[0], err, out))
		}
	}
}

// prefix is a throwaway Wine prefix with the bcryptprimitives shim; its
// wineserver (and so every Wine process of the test) is killed at cleanup.
type prefix struct {
	*wine.Wine
	t       *testing.T
	scratch string
}

func newPrefix(ctx context.Context, t *testing.T, log *slog.Logger, root string) *prefix {
	t.Helper()
	w, err := wine.Ensure(ctx, log, os.Geteuid() != 0)
	if err != nil {
		unavailable(t, "wine: "+err.Error())
	}
	w.Prefix = filepath.Join(t.TempDir(), "prefix")
	t.Cleanup(func() { w.Shutdown(log) }) // runs before TempDir's removal
	if err := w.EnsurePrefix(ctx, log); err != nil {
		t.Fatal(err)
	}
	if err := w.InstallShim(ctx, log, wine.ShimSource(root)); err != nil {
		t.Fatal(err)
	}
	return &prefix{Wine: w, t: t, scratch: t.TempDir()}
}

// run runs a Windows program in the prefix and returns its exit error and
// output. Output goes through a file: Wine's background processes
// (wineserver, services.exe) would hold a pipe open.
//
// When Wine itself fails to launch the program ("ShellExecuteEx failed",
// seen once in CI for msiexec /x: the program never ran, its log was not
// even created), the launch is tried once more; the program's own failures
// are returned as they are.
func (p *prefix) run(ctx context.Context, args ...string) (string, error) {
	p.t.Helper()
	out, err := p.runOnce(ctx, args...)
	if err != nil && strings.Contains(out, "ShellExecuteEx failed") {
		p.t.Logf("wine could not launch %s, trying again: %v\n%s", args[0], err, out)
		time.Sleep(time.Second)
		out, err = p.runOnce(ctx, args...)
	}
	return out, err
}

func (p *prefix) runOnce(ctx context.Context, args ...string) (string, error) {
	p.t.Helper()
	f, err := os.CreateTemp(p.scratch, "out")
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	cmd := p.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	b, _ := os.ReadFile(f.Name())
	return string(b), err
}

// path is a path under the prefix's drive C: (given in Windows form).
func (p *prefix) path(win string) string {
	rel := strings.TrimPrefix(strings.ReplaceAll(win, `\`, "/"), "C:/")
	return filepath.Join(p.Prefix, "drive_c", rel)
}

// winPath is a Linux path as Wine's drive Z: shows it.
func winPath(p string) string { return "Z:" + strings.ReplaceAll(p, "/", `\`) }

// poll calls cond every 200 ms until it holds or timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last seen:\n%s", what, timeout, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestMSIUnderWine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	needTools(ctx, t, log)
	p := newPrefix(ctx, t, log, root)

	// A signed MSI, as a release has: a throwaway self-signed certificate.
	keys := t.TempDir()
	sign := &msi.Signing{Cert: filepath.Join(keys, "cert.pem"), Key: filepath.Join(keys, "key.pem")}
	if out, err := exec.CommandContext(ctx, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
		"-subj", "/CN=Seine throwaway test signer", "-addext", "extendedKeyUsage=codeSigning",
		"-keyout", sign.Key, "-out", sign.Cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	pkg := filepath.Join(t.TempDir(), "seine.msi")
	start := time.Now()
	if err := msi.BuildMSI(ctx, pkg, msi.Options{Root: root, Version: "0.1.0", Sign: sign, Logger: log}); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the msi in %s", time.Since(start).Round(time.Millisecond))
	_, seinectl := os.Stat(filepath.Join(root, "services", "seinectl"))

	// Install with properties.
	installLog := filepath.Join(p.scratch, "install.log")
	start = time.Now()
	if out, err := p.run(ctx, "msiexec", "/i", winPath(pkg), "/qn", "/l*v", winPath(installLog),
		"NODENAME=win-node-1", `KUBECONFIG=C:\k\config`, "UPLINK=Ethernet 3", "TRAFFICMODE=noEncap"); err != nil {
		b, _ := os.ReadFile(installLog)
		t.Fatalf("msiexec /i: %v\n%s\ninstall log:\n%s", err, out, tail(b, 120))
	}
	t.Logf("installed in %s", time.Since(start).Round(time.Millisecond))

	installed := []string{
		`C:\Program Files\Seine\seine-agent.exe`,
		`C:\opt\cni\bin\seine.exe`,
		`C:\Program Files\WindowsPowerShell\Modules\Seine\Seine.psm1`,
		`C:\Program Files\WindowsPowerShell\Modules\Seine\Seine.psd1`,
		`C:\ProgramData\Seine\seine-agent.yaml`,
	}
	if seinectl == nil {
		installed = append(installed, `C:\Program Files\Seine\seinectl.exe`)
	}
	for _, f := range installed {
		if _, err := os.Stat(p.path(f)); err != nil {
			t.Errorf("not installed: %s (%v)", f, err)
		}
	}
	if out, err := exec.CommandContext(ctx, "osslsigncode", "verify", "-CAfile", sign.Cert,
		"-in", p.path(`C:\Program Files\Seine\seine-agent.exe`)).CombinedOutput(); err != nil {
		t.Errorf("installed seine-agent.exe is not signed by the build's key: %v\n%s", err, out)
	}

	// The configuration carries the properties, the template the rest.
	b, err := os.ReadFile(p.path(`C:\ProgramData\Seine\seine-agent.yaml`))
	if err != nil {
		t.Fatal(err)
	}
	var cfg agent.Config
	if js, err := yaml.YAMLToJSON(b); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(js, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"nodeName":       {cfg.NodeName, "win-node-1"},
		"kubeconfig":     {cfg.Kubeconfig, `C:\k\config`},
		"uplink":         {cfg.Uplink, "Ethernet 3"},
		"trafficMode":    {cfg.TrafficMode, "noEncap"},
		"tunnelType":     {cfg.TunnelType, "geneve"},
		"stateDir":       {cfg.StateDir, `C:\ProgramData\Seine\state`},
		"cniConfDir":     {cfg.CNIConfDir, `C:\etc\cni\net.d`},
		"ovs.dbEndpoint": {cfg.OVS.DBEndpoint, `npipe:\\.\pipe\C:openvswitchvarrunopenvswitchdb.sock`},
	}
	for k, v := range want {
		if v[0] != v[1] {
			t.Errorf("installed config %s = %q, want %q", k, v[0], v[1])
		}
	}
	if t.Failed() {
		t.Logf("installed config:\n%s", b)
	}

	if out, err := p.run(ctx, "reg", "query", `HKLM\SOFTWARE\Seine`, "/v", "InstallDir"); err != nil || !strings.Contains(out, `C:\Program Files\Seine\`) {
		t.Errorf("registry InstallDir: %v\n%s", err, out)
	}

	// The service is registered, stopped (the MSI does not start it).
	if out, err := p.run(ctx, "sc", "query", "seine-agent"); err != nil || !strings.Contains(out, "STOPPED") {
		t.Fatalf("sc query seine-agent after install: %v\n%s", err, out)
	}

	// Started, it finds no Host Network Service and stops, saying so.
	agentLog := p.path(`C:\ProgramData\Seine\logs\seine-agent.log`)
	out, err := p.run(ctx, "sc", "start", "seine-agent")
	t.Logf("sc start seine-agent: %v\n%s", err, out)
	poll(t, 2*time.Minute, "the agent logs why it cannot start", func() (bool, string) {
		b, _ := os.ReadFile(agentLog)
		return strings.Contains(string(b), "seine-agent cannot start") && strings.Contains(string(b), "Host Network Service (hns) is not installed"), string(b)
	})
	var stopped string
	poll(t, 2*time.Minute, "the service stops", func() (bool, string) {
		stopped, _ = p.run(ctx, "sc", "query", "seine-agent")
		return strings.Contains(stopped, "STOPPED"), stopped
	})
	// Stopped by its own refusal to start: a service-specific exit code 1
	// (ERROR_SERVICE_SPECIFIC_ERROR, 1066), not a crash.
	if !regexp.MustCompile(`WIN32_EXIT_CODE\s*:\s*1066\b`).MatchString(stopped) ||
		!regexp.MustCompile(`SERVICE_EXIT_CODE\s*:\s*1\b`).MatchString(stopped) {
		t.Errorf("stopped service's exit codes, want 1066 and service-specific 1:\n%s", stopped)
	}
	b, _ = os.ReadFile(agentLog)
	t.Logf("agent log:\n%s", b)

	// Removal leaves nothing.
	uninstallLog := filepath.Join(p.scratch, "uninstall.log")
	if out, err := p.run(ctx, "msiexec", "/x", winPath(pkg), "/qn", "/l*v", winPath(uninstallLog)); err != nil {
		b, _ := os.ReadFile(uninstallLog)
		t.Fatalf("msiexec /x: %v\n%s\nuninstall log:\n%s", err, out, tail(b, 120))
	}
	for _, d := range []string{
		`C:\Program Files\Seine`,
		`C:\Program Files\WindowsPowerShell\Modules\Seine`,
		`C:\ProgramData\Seine`,
		`C:\opt`,
	} {
		if _, err := os.Stat(p.path(d)); !os.IsNotExist(err) {
			var left []string
			filepath.WalkDir(p.path(d), func(path string, _ os.DirEntry, _ error) error {
				left = append(left, path)
				return nil
			})
			t.Errorf("left after removal: %s: %v", d, left)
		}
	}
	if t.Failed() {
		b, _ := os.ReadFile(uninstallLog)
		t.Logf("uninstall log (custom actions):\n%s", grepLines(b, "Purge", "purge", "CustomAction", "RemoveFolders"))
	}
	if out, err := p.run(ctx, "sc", "query", "seine-agent"); err == nil || strings.Contains(out, "STATE") {
		t.Errorf("seine-agent service still there after removal:\n%s", out)
	}
	if out, err := p.run(ctx, "reg", "query", `HKLM\SOFTWARE\Seine`); err == nil {
		t.Errorf("registry key still there after removal:\n%s", out)
	}
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// grepLines is the lines of b (UTF-16 logs read as bytes included) that
// contain any of words.
func grepLines(b []byte, words ...string) string {
	text := strings.ReplaceAll(string(b), "\x00", "")
	var out []string
	for line := range strings.Lines(text) {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, strings.TrimRight(line, "\r\n"))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
