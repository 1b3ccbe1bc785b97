// Package msi builds Seine's Windows installer on Linux: it cross-builds the
// Windows binaries, stages them with installer/windows (the WiX source, the
// configuration template, the PowerShell module), compiles the MSI with
// Debian's wixl and, given a key and certificate, signs the binaries and the
// MSI with osslsigncode (Authenticode).
package msi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options says what to build.
type Options struct {
	// Root is Seine's source tree; empty means the main module of the
	// current directory (go env GOMOD).
	Root string
	// Version is the product version, major.minor.build (MSI's rule);
	// empty means 0.0.0.
	Version string
	// Sign, when set, signs the executables and the MSI.
	Sign *Signing
	// GoFlags are extra `go build` flags (a release adds -trimpath; tests
	// leave it out to share the build cache with other builds).
	GoFlags []string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Signing is an Authenticode key and its certificate chain, PEM files.
type Signing struct {
	Cert, Key string
	// Name is the signed description ("Seine" when empty).
	Name string
	// TimestampURL, when set, countersigns with that RFC 3161 server.
	TimestampURL string
}

// The executables the MSI carries, by services/ package. An optional one is
// left out (with a warning) while its package does not exist, and its WiX
// variable tells seine.wxs it is there.
var (
	required = []string{"seine-agent", "seine-cni"}
	optional = []struct{ name, wixVar string }{{"seinectl", "Seinectl"}}
)

// Sources are the files of installer/windows that go into the MSI.
var Sources = []string{"seine.wxs", "seine-agent.yaml", "Seine.psm1", "Seine.psd1"}

// generated are files BuildMSI writes into the MSI: the agent's log file,
// installed empty so that removing the product removes it.
var generated = map[string][]byte{"seine-agent.log": nil}

// validVersion reports whether v is an MSI ProductVersion: major.minor.build
// at most 255.255.65535.
func validVersion(v string) bool {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > []int{255, 255, 65535}[i] || strconv.Itoa(n) != p {
			return false
		}
	}
	return true
}

// Locks are the MSI's MsiLockPermissionsEx rows: Windows Installer 5 gives
// each folder (a CreateFolder of seine.wxs) this SDDL when it creates it,
// replacing the inherited access. C:\ProgramData lets every user create
// files in a new subdirectory and read them, and C:\ lets authenticated
// users modify what is created below it: the agent's kubeconfig, state, CNI
// socket and the spool of DELs it replays as SYSTEM must be SYSTEM's and
// Administrators' only, and the plugins the runtime runs as SYSTEM writable
// by them only. wixl has no PermissionEx, so msibuild adds the table after
// it. The SDDL strings are windows.DirACL's (sddlPrivate, sddlPublic), which
// `seinectl node-prep` applies and `seinectl check` verifies.
var Locks = []struct{ Folder, SDDL string }{
	{"DATADIR", "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"},
	{"CNIBINDIR", "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"},
}

// locksIDT is the MsiLockPermissionsEx table in msibuild's import format.
func locksIDT() []byte {
	var b strings.Builder
	b.WriteString("MsiLockPermissionsEx\tLockObject\tTable\tSDDL\tCondition\ns72\ts72\ts32\tl0\tS255\nMsiLockPermissionsEx\tMsiLockPermissionsEx\n")
	for _, l := range Locks {
		fmt.Fprintf(&b, "Lock%s\t%s\tCreateFolder\t%s\t\n", l.Folder, l.Folder, l.SDDL)
	}
	return []byte(b.String())
}

// BuildMSI writes Seine's MSI to out. It needs go, wixl (Debian's wixl
// package), msibuild (msitools) and, when signing, osslsigncode on PATH.
func BuildMSI(ctx context.Context, out string, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "0.0.0"
	}
	if !validVersion(o.Version) {
		return fmt.Errorf("msi version %q: want major.minor.build with numbers (255.255.65535 at most)", o.Version)
	}
	wixl, err := exec.LookPath("wixl")
	if err != nil {
		return fmt.Errorf("wixl (apt-get install wixl): %w", err)
	}
	msibuild, err := exec.LookPath("msibuild")
	if err != nil {
		return fmt.Errorf("msibuild (apt-get install msitools): %w", err)
	}
	if o.Root == "" {
		if o.Root, err = moduleRoot(ctx); err != nil {
			return err
		}
	}
	stage, err := os.MkdirTemp("", "seine-msi")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)

	for _, f := range Sources {
		if err := copyFile(filepath.Join(o.Root, "installer", "windows", f), filepath.Join(stage, f)); err != nil {
			return fmt.Errorf("stage %s: %w", f, err)
		}
	}
	for f, b := range generated {
		if err := os.WriteFile(filepath.Join(stage, f), b, 0o644); err != nil {
			return err
		}
	}
	bins, err := buildBinaries(ctx, log, o.Root, stage, o.GoFlags)
	if err != nil {
		return err
	}
	if o.Sign != nil {
		for _, b := range bins {
			if err := sign(ctx, o.Sign, filepath.Join(stage, b+".exe")); err != nil {
				return err
			}
		}
	}
	args := []string{"-a", "x64", "-D", "Version=" + o.Version}
	for _, b := range optional {
		if slices.Contains(bins, b.name) {
			args = append(args, "-D", b.wixVar+"=1")
		}
	}
	msi := filepath.Join(stage, "seine.msi")
	args = append(args, "-o", msi, "seine.wxs")
	start := time.Now()
	cmd := exec.CommandContext(ctx, wixl, args...)
	cmd.Dir = stage
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("wixl %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	idt := filepath.Join(stage, "MsiLockPermissionsEx.idt")
	if err := os.WriteFile(idt, locksIDT(), 0o644); err != nil {
		return err
	}
	if b, err := exec.CommandContext(ctx, msibuild, msi, "-i", idt).CombinedOutput(); err != nil {
		return fmt.Errorf("msibuild %s -i %s: %w\n%s", msi, idt, err, b)
	}
	log.Info("built msi", "binaries", bins, "version", o.Version, "wixl", time.Since(start).Round(time.Millisecond))
	if o.Sign != nil {
		if err := sign(ctx, o.Sign, msi); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return copyFile(msi, out)
}

// buildBinaries cross-builds the MSI's executables into dir and returns
// their names.
func buildBinaries(ctx context.Context, log *slog.Logger, root, dir string, goflags []string) ([]string, error) {
	bins := append([]string(nil), required...)
	for _, b := range optional {
		if _, err := os.Stat(filepath.Join(root, "services", b.name)); err == nil {
			bins = append(bins, b.name)
		} else {
			log.Warn("leaving an executable out of the msi: its package does not exist yet", "binary", b.name)
		}
	}
	args := append([]string{"build"}, goflags...)
	args = append(args, "-o", dir+string(filepath.Separator))
	for _, b := range bins {
		args = append(args, "./services/"+b)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	log.Info("built windows binaries", "binaries", bins, "took", time.Since(start).Round(time.Millisecond))
	return bins, nil
}

// sign signs file in place with osslsigncode.
func sign(ctx context.Context, s *Signing, file string) error {
	tool, err := exec.LookPath("osslsigncode")
	if err != nil {
		return fmt.Errorf("sign %s: osslsigncode (apt-get install osslsigncode): %w", filepath.Base(file), err)
	}
	if s.Cert == "" || s.Key == "" {
		return errors.New("sign: a certificate and a key are both needed")
	}
	name := s.Name
	if name == "" {
		name = "Seine"
	}
	signed := file + ".signed"
	args := []string{"sign", "-certs", s.Cert, "-key", s.Key, "-n", name, "-h", "sha256"}
	if s.TimestampURL != "" {
		args = append(args, "-ts", s.TimestampURL)
	}
	args = append(args, "-in", file, "-out", signed)
	if b, err := exec.CommandContext(ctx, tool, args...).CombinedOutput(); err != nil {
		os.Remove(signed)
		return fmt.Errorf("sign %s: %w\n%s", filepath.Base(file), err, b)
	}
	return os.Rename(signed, file)
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: set Options.Root to Seine's source tree")
	}
	return filepath.Dir(gomod), nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
