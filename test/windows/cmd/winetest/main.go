// Command winetest runs Windows test binaries of Seine's packages under Wine.
//
//	go run ./test/windows/cmd/winetest [-run regexp] [-skip regexp] [-v] [-json] ./ovs/... ./platform/...
//
// It installs what is missing with apt-get (wine, wine64,
// gcc-mingw-w64-x86-64), keeps a private WINEPREFIX (~/.cache/seine-wine),
// builds and installs the bcryptprimitives.dll shim Go needs on Wine 8, then
// for each package with test files builds `GOOS=windows go test -c` and runs
// the .exe under wine64 in the package's directory, streaming its output. It
// exits non-zero if any package fails. With -json it prints test2json
// events instead, as go test -json does (make test reads them to count
// skips). See test/windows/README.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/seine-cni/seine/test/windows/wine"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(log, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "winetest:", err)
		os.Exit(1)
	}
}

type options struct {
	prefix  string
	run     string
	skip    string
	verbose bool
	json    bool
	timeout time.Duration
	noApt   bool
}

func run(log *slog.Logger, args []string) error {
	var o options
	home, _ := os.UserHomeDir()
	fs := flag.NewFlagSet("winetest", flag.ContinueOnError)
	fs.StringVar(&o.prefix, "prefix", filepath.Join(home, ".cache", "seine-wine"), "private WINEPREFIX (created on first use, reused)")
	fs.StringVar(&o.run, "run", "", "run only tests matching this regexp (go test -run)")
	fs.StringVar(&o.skip, "skip", "", "skip tests matching this regexp (go test -skip)")
	fs.BoolVar(&o.verbose, "v", false, "verbose test output (go test -v)")
	fs.BoolVar(&o.json, "json", false, "print test2json events (go test -json); the output of each package comes when it is done")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "timeout of each package's test binary")
	fs.BoolVar(&o.noApt, "no-apt", false, "do not install missing tools with apt-get; fail instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: winetest [flags] <packages>")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	w, err := wine.Ensure(ctx, log, o.noApt)
	if err != nil {
		return err
	}
	w.Prefix = o.prefix
	if err := w.EnsurePrefix(ctx, log); err != nil {
		return err
	}
	defer w.Shutdown(log)
	if err := w.InstallShim(ctx, log, wine.ShimSource(root)); err != nil {
		return err
	}
	pkgs, err := listPackages(ctx, root, fs.Args())
	if err != nil {
		return err
	}
	bin, err := os.MkdirTemp("", "winetest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)

	var failed []string
	for _, p := range pkgs {
		if !p.hasTests {
			fmt.Printf("?   \t%s\t[no test files]\n", p.path)
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		err := testPackage(ctx, w, root, bin, p, o)
		w.CleanTemp(log)
		if err != nil {
			fmt.Printf("FAIL\t%s\t%.1fs\t(%v)\n", p.path, time.Since(start).Seconds(), err)
			failed = append(failed, p.path)
			continue
		}
		if !o.json { // test2json's events say it
			fmt.Printf("ok  \t%s\t%.1fs\t(wine)\n", p.path, time.Since(start).Seconds())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of the packages failed under Wine: %s", len(failed), strings.Join(failed, " "))
	}
	return nil
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run winetest from Seine's source tree")
	}
	return filepath.Dir(gomod), nil
}

type pkg struct {
	path, dir string
	hasTests  bool
}

// listPackages expands patterns as GOOS=windows sees them.
func listPackages(ctx context.Context, root string, patterns []string) ([]pkg, error) {
	args := append([]string{"list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}"}, patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %w", strings.Join(patterns, " "), err)
	}
	var pkgs []pkg
	for line := range strings.Lines(string(out)) {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) != 4 {
			continue
		}
		pkgs = append(pkgs, pkg{path: f[0], dir: f[1], hasTests: f[2] != "0" || f[3] != "0"})
	}
	return pkgs, nil
}

// testPackage builds p's test binary for Windows and runs it under Wine in
// p's directory, as go test does, streaming its output.
func testPackage(ctx context.Context, w *wine.Wine, root, bin string, p pkg, o options) error {
	exe := filepath.Join(bin, strings.ReplaceAll(p.path, "/", "_")+".test.exe")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", exe, p.path)
	build.Dir = root
	build.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	args := []string{exe, "-test.timeout=" + o.timeout.String()}
	switch {
	case o.json:
		args = append(args, "-test.v=test2json")
	case o.verbose:
		args = append(args, "-test.v")
	}
	if o.run != "" {
		args = append(args, "-test.run="+o.run)
	}
	if o.skip != "" {
		args = append(args, "-test.skip="+o.skip)
	}
	// The binary enforces -test.timeout itself; the margin covers Wine.
	tctx, cancel := context.WithTimeout(ctx, o.timeout+time.Minute)
	defer cancel()
	cmd := w.Command(tctx, args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if !o.json {
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("test binary: %w", err)
		}
		return nil
	}
	// The binary's output goes to a file and through test2json when it is
	// done: a pipe could be held open by wineserver, which Wine may start
	// from this very process and which outlives it.
	start := time.Now()
	out, runErr, err := runToFile(cmd, bin)
	if err != nil {
		return err
	}
	defer out.Close()
	if cut(out) && time.Since(start) < o.timeout {
		// Seen on 2026-12-06 (windows TestRealCollect, manifest
		// TestControllerServesTheAPIService, each once in a full run of
		// the Wine step; cause not found): a package under Wine exits 0
		// with its output cut mid-test. A test binary ends its output
		// with PASS or FAIL, and says --- FAIL for a failed test: output
		// with neither went wrong, not the tests, so the package runs once
		// more, saying so. A second cut output is shown as it is and
		// fails the step; a run that reached the timeout is not
		// repeated. A non-zero exit with such output is repeated too:
		// CI on 2026-12-07 failed the pipe-dialer step with exit status
		// 1 and not one test failed or left unfinished.
		fmt.Fprintf(os.Stderr, "winetest: %s exited (%v) with its output cut, no test failed in it (Wine); running it again\n", p.path, exitText(runErr))
		out.Close()
		cmd = w.Command(tctx, args...)
		cmd.Dir = p.dir
		cmd.Stderr = os.Stderr
		if out, runErr, err = runToFile(cmd, bin); err != nil {
			return err
		}
		defer out.Close()
	}
	conv := exec.CommandContext(ctx, "go", "tool", "test2json", "-p", p.path)
	conv.Stdin, conv.Stdout, conv.Stderr = out, os.Stdout, os.Stderr
	if err := conv.Run(); err != nil {
		return fmt.Errorf("go tool test2json: %w", err)
	}
	if runErr != nil {
		return fmt.Errorf("test binary: %w", runErr)
	}
	return nil
}

// runToFile runs cmd with its standard output in a new file of dir and
// returns the file, rewound, and cmd's error.
func runToFile(cmd *exec.Cmd, dir string) (*os.File, error, error) {
	out, err := os.CreateTemp(dir, "output")
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout = out
	runErr := cmd.Run()
	if _, err := out.Seek(0, 0); err != nil {
		out.Close()
		return nil, nil, err
	}
	return out, runErr, nil
}

// cut says whether a test binary's -test.v=test2json output was cut: it
// does not end with the binary's final PASS or FAIL line and no test in it
// failed. It leaves f rewound.
func cut(f *os.File) bool {
	defer f.Seek(0, 0)
	b, err := io.ReadAll(f)
	if err != nil {
		return false
	}
	b = bytes.TrimRight(b, "\r\n")
	return !bytes.HasSuffix(b, []byte("\x16PASS")) && !bytes.HasSuffix(b, []byte("\x16FAIL")) &&
		!bytes.Contains(b, []byte("\x16--- FAIL"))
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
