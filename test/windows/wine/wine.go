// Package wine runs Windows programs under Debian's Wine 8 on Linux, for
// Seine's Windows tests: it finds (or apt-installs) wine64, wineserver and
// MinGW, keeps a WINEPREFIX, and installs the bcryptprimitives.dll shim Go
// programs need there (see test/windows/README.md). winetest and the MSI
// test use it.
package wine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const mingwGCC = "x86_64-w64-mingw32-gcc"

// aptPackages provide wine64 and the MinGW compiler. Debian's wine64 runs
// 64-bit programs without the i386 architecture; its "wine" launcher only
// warns that wine32 is missing, so winetest calls wine64 directly.
var aptPackages = []string{"wine", "wine64", "gcc-mingw-w64-x86-64"}

// Wine runs programs in one private prefix.
type Wine struct {
	Wine64, Wineserver string
	// Prefix is the WINEPREFIX every command uses; set it before
	// EnsurePrefix.
	Prefix string
}

// findWine looks for Debian's wine64 loader and its wineserver.
func findWine() (*Wine, bool) {
	var w Wine
	for _, p := range []string{"/usr/lib/wine/wine64", "wine64"} {
		if path, err := exec.LookPath(p); err == nil {
			w.Wine64 = path
			break
		}
	}
	for _, p := range []string{"/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver", "wineserver"} {
		if path, err := exec.LookPath(p); err == nil {
			w.Wineserver = path
			break
		}
	}
	_, gccErr := exec.LookPath(mingwGCC)
	return &w, w.Wine64 != "" && w.Wineserver != "" && gccErr == nil
}

// Ensure finds wine64, wineserver and MinGW, installing them with apt-get
// (as root, non-interactively) when one is missing and noApt is false.
func Ensure(ctx context.Context, log *slog.Logger, noApt bool) (*Wine, error) {
	if w, ok := findWine(); ok {
		return w, nil
	}
	if noApt {
		return nil, fmt.Errorf("wine64 or %s missing (apt-get install %s)", mingwGCC, strings.Join(aptPackages, " "))
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("wine64 or %s missing and not root: run as root or apt-get install %s", mingwGCC, strings.Join(aptPackages, " "))
	}
	log.Info("installing with apt-get", "packages", aptPackages)
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"update"},
		append([]string{"install", "-y", "--no-install-recommends"}, aptPackages...),
	} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	w, ok := findWine()
	if !ok {
		return nil, fmt.Errorf("wine64, wineserver or %s still missing after apt-get install", mingwGCC)
	}
	return w, nil
}

// Env is the environment of every Wine process: the private prefix, no
// display (nothing may open a window), no debug channels, and no Mono or
// Gecko, whose absence would otherwise prompt for a download.
func (w *Wine) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DISPLAY", "WAYLAND_DISPLAY", "WINEPREFIX", "WINEDEBUG", "WINEDLLOVERRIDES", "WINEARCH":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "WINEPREFIX="+w.Prefix, "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=")
}

// Command is wine64 running args in the prefix.
func (w *Wine) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, w.Wine64, args...)
	cmd.Env = w.Env()
	cmd.WaitDelay = 5 * time.Second // wine's children may hold the output pipes
	return cmd
}

// System32 is the prefix's drive_c/windows/system32.
func (w *Wine) System32() string { return filepath.Join(w.Prefix, "drive_c", "windows", "system32") }

// EnsurePrefix creates the prefix with wineboot the first time.
func (w *Wine) EnsurePrefix(ctx context.Context, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(w.Prefix, "system.reg")); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(w.Prefix), 0o755); err != nil {
		return err
	}
	log.Info("creating wine prefix", "prefix", w.Prefix)
	start := time.Now()
	// Output goes to a file: wineboot leaves wineserver running, which would
	// hold a pipe open.
	out, err := os.CreateTemp("", "wineboot")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := w.Command(ctx, "wineboot", "--init")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("wineboot --init in %s: %w\n%s", w.Prefix, err, b)
	}
	// wineboot returns before the registry is written; wait for it.
	wait := exec.CommandContext(ctx, w.Wineserver, "-w")
	wait.Env = w.Env()
	if err := wait.Run(); err != nil {
		return fmt.Errorf("wineserver -w: %w", err)
	}
	if _, err := os.Stat(filepath.Join(w.Prefix, "system.reg")); err != nil {
		return fmt.Errorf("wineboot left no registry in %s: %w", w.Prefix, err)
	}
	log.Info("wine prefix ready", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// InstallShim builds bcryptprimitives.dll from src with MinGW and puts it in
// the prefix's system32, where Wine's loader finds it (not beside the exe).
// It is rebuilt only when its sources change.
func (w *Wine) InstallShim(ctx context.Context, log *slog.Logger, src string) error {
	c, def := filepath.Join(src, "bcryptprimitives.c"), filepath.Join(src, "bcryptprimitives.def")
	sum, err := fileHash(c, def)
	if err != nil {
		return fmt.Errorf("bcryptprimitives shim sources: %w", err)
	}
	dll := filepath.Join(w.System32(), "bcryptprimitives.dll")
	stamp := filepath.Join(w.Prefix, "seine-bcryptprimitives.sha256")
	if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == sum {
		if _, err := os.Stat(dll); err == nil {
			return nil
		}
	}
	tmp := dll + ".tmp"
	cmd := exec.CommandContext(ctx, mingwGCC, "-shared", "-O2", "-Wall", "-Werror", "-o", tmp, c, def, "-ladvapi32")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("build bcryptprimitives.dll: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, dll); err != nil {
		return err
	}
	log.Info("installed bcryptprimitives.dll shim", "path", dll)
	return os.WriteFile(stamp, []byte(sum+"\n"), 0o644)
}

// CleanTemp empties the prefix's temp directories: Go's t.TempDir cleanup
// cannot delete files under Wine 8 (see README), so tests leave them there.
func (w *Wine) CleanTemp(log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(w.Prefix, "drive_c", "users", "*", "Temp"))
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
				log.Warn("clean wine temp", "err", err)
			}
		}
	}
}

// Shutdown stops the prefix's wineserver and the services it started, so
// nothing outlives the run.
func (w *Wine) Shutdown(log *slog.Logger) {
	cmd := exec.Command(w.Wineserver, "-k")
	cmd.Env = w.Env()
	if err := cmd.Run(); err != nil && !errors.Is(err, exec.ErrNotFound) {
		var ee *exec.ExitError
		if !errors.As(err, &ee) { // exit status 1: no server was running
			log.Warn("wineserver -k", "err", err)
		}
	}
}

// ShimSource is the directory of the bcryptprimitives shim's sources in
// Seine's tree rooted at root.
func ShimSource(root string) string {
	return filepath.Join(root, "test", "windows", "bcryptprimitives")
}

// fileHash is the hex SHA-256 of the files' contents, in order.
func fileHash(paths ...string) (string, error) {
	h := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
