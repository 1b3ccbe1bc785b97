package main

import (
	"context"
	"errors"
	"fmt"
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

// wine runs programs in one private prefix.
type wine struct {
	wine64, wineserver string
	prefix             string
}

// findWine looks for Debian's wine64 loader and its wineserver.
func findWine() (*wine, bool) {
	var w wine
	for _, p := range []string{"/usr/lib/wine/wine64", "wine64"} {
		if path, err := exec.LookPath(p); err == nil {
			w.wine64 = path
			break
		}
	}
	for _, p := range []string{"/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver", "wineserver"} {
		if path, err := exec.LookPath(p); err == nil {
			w.wineserver = path
			break
		}
	}
	_, gccErr := exec.LookPath(mingwGCC)
	return &w, w.wine64 != "" && w.wineserver != "" && gccErr == nil
}

// ensureTools finds wine64, wineserver and MinGW, installing them with
// apt-get (as root, non-interactively) when one is missing.
func ensureTools(ctx context.Context, log *slog.Logger, noApt bool) (*wine, error) {
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

// env is the environment of every Wine process: the private prefix, no
// display (nothing may open a window), no debug channels, and no Mono or
// Gecko, whose absence would otherwise prompt for a download.
func (w *wine) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DISPLAY", "WAYLAND_DISPLAY", "WINEPREFIX", "WINEDEBUG", "WINEDLLOVERRIDES", "WINEARCH":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "WINEPREFIX="+w.prefix, "WINEDEBUG=-all", "WINEDLLOVERRIDES=mscoree,mshtml=")
}

func (w *wine) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, w.wine64, args...)
	cmd.Env = w.env()
	cmd.WaitDelay = 5 * time.Second // wine's children may hold the output pipes
	return cmd
}

func (w *wine) system32() string { return filepath.Join(w.prefix, "drive_c", "windows", "system32") }

// ensurePrefix creates the prefix with wineboot the first time.
func (w *wine) ensurePrefix(ctx context.Context, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(w.prefix, "system.reg")); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(w.prefix), 0o755); err != nil {
		return err
	}
	log.Info("creating wine prefix", "prefix", w.prefix)
	start := time.Now()
	// Output goes to a file: wineboot leaves wineserver running, which would
	// hold a pipe open.
	out, err := os.CreateTemp("", "wineboot")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := w.command(ctx, "wineboot", "--init")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("wineboot --init in %s: %w\n%s", w.prefix, err, b)
	}
	// wineboot returns before the registry is written; wait for it.
	wait := exec.CommandContext(ctx, w.wineserver, "-w")
	wait.Env = w.env()
	if err := wait.Run(); err != nil {
		return fmt.Errorf("wineserver -w: %w", err)
	}
	if _, err := os.Stat(filepath.Join(w.prefix, "system.reg")); err != nil {
		return fmt.Errorf("wineboot left no registry in %s: %w", w.prefix, err)
	}
	log.Info("wine prefix ready", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// installShim builds bcryptprimitives.dll from src with MinGW and puts it in
// the prefix's system32, where Wine's loader finds it (not beside the exe).
// It is rebuilt only when its sources change.
func (w *wine) installShim(ctx context.Context, log *slog.Logger, src string) error {
	c, def := filepath.Join(src, "bcryptprimitives.c"), filepath.Join(src, "bcryptprimitives.def")
	sum, err := fileHash(c, def)
	if err != nil {
		return fmt.Errorf("bcryptprimitives shim sources: %w", err)
	}
	dll := filepath.Join(w.system32(), "bcryptprimitives.dll")
	stamp := filepath.Join(w.prefix, "seine-bcryptprimitives.sha256")
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

// cleanTemp empties the prefix's temp directories: Go's t.TempDir cleanup
// cannot delete files under Wine 8 (see README), so tests leave them there.
func (w *wine) cleanTemp(log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(w.prefix, "drive_c", "users", "*", "Temp"))
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

// shutdown stops the prefix's wineserver and the services it started, so
// nothing outlives the run.
func (w *wine) shutdown(log *slog.Logger) {
	cmd := exec.Command(w.wineserver, "-k")
	cmd.Env = w.env()
	if err := cmd.Run(); err != nil && !errors.Is(err, exec.ErrNotFound) {
		var ee *exec.ExitError
		if !errors.As(err, &ee) { // exit status 1: no server was running
			log.Warn("wineserver -k", "err", err)
		}
	}
}
