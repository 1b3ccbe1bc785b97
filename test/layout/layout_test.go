// Package layout holds tests of the repository's shape: the rules in
// DESIGN.md that keep the platform-neutral core free of OS backends and keep
// every package building for both operating systems.
package layout

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/seine-cni/seine"

// neutral are the trees that must never import an OS backend.
var neutral = []string{"core", "ovs", "platform"}

var backends = []string{module + "/linux", module + "/windows"}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func isBackend(path string) bool {
	for _, b := range backends {
		if path == b || strings.HasPrefix(path, b+"/") {
			return true
		}
	}
	return false
}

// TestNeutralFilesImportNoBackend parses every Go file under the neutral
// trees, whatever its build constraints, so a file that only builds on one
// OS cannot hide a forbidden import.
func TestNeutralFilesImportNoBackend(t *testing.T) {
	root := repoRoot(t)
	fset := token.NewFileSet()
	files := 0
	for _, dir := range neutral {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") {
				return nil
			}
			f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			files++
			for _, imp := range f.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				if isBackend(path) {
					rel, _ := filepath.Rel(root, p)
					t.Errorf("%s imports %s: core/, ovs/ and platform/ must not import linux/ or windows/", rel, path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("checked %d files", files)
}

// TestNeutralDepsHaveNoBackend checks the transitive imports, per GOOS, as
// the go command resolves them.
func TestNeutralDepsHaveNoBackend(t *testing.T) {
	root := repoRoot(t)
	for _, goos := range []string{"linux", "windows"} {
		args := []string{"list", "-e", "-f", `{{.ImportPath}} {{join .Deps " "}}`}
		for _, dir := range neutral {
			if _, err := os.Stat(filepath.Join(root, dir)); err == nil {
				args = append(args, "./"+dir+"/...")
			}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+goos)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOOS=%s go list: %v", goos, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 || strings.HasPrefix(fields[0], "warning:") {
				continue
			}
			for _, dep := range fields[1:] {
				if isBackend(dep) {
					t.Errorf("GOOS=%s: %s depends on %s", goos, fields[0], dep)
				}
			}
		}
	}
}

// TestBuildsForBothOS builds every package of the module for linux and
// windows, test files included (go vet type-checks them).
func TestBuildsForBothOS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the whole module twice; skipped with -short")
	}
	root := repoRoot(t)
	for _, goos := range []string{"linux", "windows"} {
		cmd := exec.Command("go", "build", "./...")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s go build ./... failed: %v\n%s", goos, err, out)
		}
	}
}
