package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCut: output is cut when it ends with neither PASS nor FAIL and no
// test in it failed.
func TestCut(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      bool
	}{
		{"whole", "\x16=== RUN   TestA\n\x16--- PASS: TestA (0.00s)\n\x16PASS\n", false},
		{"whole, CRLF", "\x16--- PASS: TestA (0.00s)\r\n\x16PASS\r\n", false},
		{"cut mid-test", "\x16=== RUN   TestA\nsome output\n", true},
		{"cut between tests", "\x16=== RUN   TestA\n\x16--- PASS: TestA (0.00s)\n", true},
		{"failed", "\x16--- FAIL: TestA (0.00s)\n\x16FAIL\n", false},
		{"failed, then cut (a panic's end is on stderr)", "\x16=== RUN   TestA\n\x16--- FAIL: TestA (0.00s)\n", false},
		{"a test named PASS-like", "\x16=== RUN   TestPASS\n", true},
		{"empty", "", true},
	} {
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(tc.out)
		f.Seek(0, 0)
		if got := cut(f); got != tc.want {
			t.Errorf("%s: cut = %v, want %v", tc.name, got, tc.want)
		}
		if off, _ := f.Seek(0, 1); off != 0 {
			t.Errorf("%s: left at offset %d, want rewound", tc.name, off)
		}
		f.Close()
	}
}
