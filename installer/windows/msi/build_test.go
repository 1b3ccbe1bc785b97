package msi

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ci"
)

// needTools installs missing tools with apt-get when root; otherwise it
// skips, or fails under CI, where they must be there.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := tool // the tool's Debian package has its name, but for msitools'
			if tool == "msibuild" || tool == "msiinfo" {
				pkg = "msitools"
			}
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return
	}
	fail := func(format string, args ...any) { t.Helper(); ci.Skipf(t, format, args...) }
	if os.Geteuid() != 0 {
		fail("%s missing and not root to apt-get install it", strings.Join(missing, ", "))
	}
	for _, args := range [][]string{{"update"}, append([]string{"install", "-y", "--no-install-recommends"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			fail("apt-get %s: %v\n%s", args[0], err, out)
		}
	}
}

// throwawaySigning makes a self-signed code-signing certificate valid for a
// day.
func throwawaySigning(t *testing.T) *Signing {
	t.Helper()
	dir := t.TempDir()
	s := &Signing{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), Name: "Seine test"}
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
		"-subj", "/CN=Seine throwaway test signer", "-addext", "extendedKeyUsage=codeSigning",
		"-keyout", s.Key, "-out", s.Cert).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return s
}

// TestBuildMSISigned builds the MSI signed with a throwaway certificate and
// checks the signature against that certificate, and that the MSI locks its
// data and plugin folders (MsiLockPermissionsEx rows for folders it
// creates).
func TestBuildMSISigned(t *testing.T) {
	needTools(t, "wixl", "osslsigncode", "openssl", "msibuild", "msiinfo")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := throwawaySigning(t)
	out := filepath.Join(t.TempDir(), "seine.msi")
	if err := BuildMSI(ctx, out, Options{Version: "0.1.2", Sign: s, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command("osslsigncode", "verify", "-CAfile", s.Cert, "-in", out).CombinedOutput()
	if err != nil {
		t.Fatalf("osslsigncode verify: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), "Signature verification: ok") {
		t.Errorf("osslsigncode verify:\n%s", b)
	}
	locks, err := exec.Command("msiinfo", "export", out, "MsiLockPermissionsEx").CombinedOutput()
	if err != nil {
		t.Fatalf("msiinfo export MsiLockPermissionsEx: %v\n%s", err, locks)
	}
	folders, err := exec.Command("msiinfo", "export", out, "CreateFolder").CombinedOutput()
	if err != nil {
		t.Fatalf("msiinfo export CreateFolder: %v\n%s", err, folders)
	}
	for _, want := range []string{
		"LockDATADIR\tDATADIR\tCreateFolder\tO:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)\t",
		"LockCNIBINDIR\tCNIBINDIR\tCreateFolder\tO:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)\t",
	} {
		if !strings.Contains(string(locks), want+"\r\n") && !strings.Contains(string(locks), want+"\n") {
			t.Errorf("MsiLockPermissionsEx lacks %q:\n%s", want, locks)
		}
	}
	for _, want := range []string{"DATADIR\tConfig", "CNIBINDIR\tCNI"} {
		if !strings.Contains(string(folders), want) {
			t.Errorf("CreateFolder lacks %q (a lock applies to folders the MSI creates):\n%s", want, folders)
		}
	}
	// The same check fails against another certificate: it does check.
	other := throwawaySigning(t)
	if b, err := exec.Command("osslsigncode", "verify", "-CAfile", other.Cert, "-in", out).CombinedOutput(); err == nil {
		t.Errorf("the MSI verifies against an unrelated certificate:\n%s", b)
	}
}

func TestBuildMSIRejectsBadVersion(t *testing.T) {
	for _, v := range []string{"1.2", "v1.2.3", "1.2.3-rc1", "256.0.0"} {
		if err := BuildMSI(context.Background(), filepath.Join(t.TempDir(), "x.msi"), Options{Version: v}); err == nil ||
			!strings.Contains(err.Error(), "version") {
			t.Errorf("BuildMSI with version %q = %v, want a version error", v, err)
		}
	}
}
