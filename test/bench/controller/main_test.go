package controller

import (
	"os"
	"testing"
)

// TestMain runs the cold-start child when BenchmarkColdStart started this
// binary for one workload (see runChild), and the tests otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(envWorkload) != "" {
		os.Exit(coldStartChild())
	}
	if os.Getenv(envTiered) != "" {
		os.Exit(tieredChild())
	}
	code := m.Run()
	afterTests()
	os.Exit(code)
}
