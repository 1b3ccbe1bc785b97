package plugin

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExecutableInPlace: a process whose executable is removed while it
// runs sees it (Linux names it "<path> (deleted)" in /proc/self/exe): a
// copy of this test binary reports in place, is removed, and reports
// gone.
func TestExecutableInPlace(t *testing.T) {
	if os.Getenv("SEINE_EXE_HELPER") == "1" {
		fmt.Println("before", executableInPlace())
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		fmt.Println("after", executableInPlace())
		os.Exit(0)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "seine")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copyPath, "-test.run=^TestExecutableInPlace$")
	cmd.Env = append(os.Environ(), "SEINE_EXE_HELPER=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	out := bufio.NewReader(stdout)
	line := func() string {
		l, err := out.ReadString('\n')
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		return strings.TrimSpace(l)
	}
	if got := line(); got != "before true" {
		t.Errorf("before the removal: %q, want before true", got)
	}
	if err := os.Remove(copyPath); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "go")
	if got := line(); got != "after false" {
		t.Errorf("after the removal: %q, want after false", got)
	}
}
