package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPassed(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      bool
	}{
		{"whole", "\x16=== RUN   TestA\n\x16--- PASS: TestA (0.00s)\n\x16PASS\n", true},
		{"whole, CRLF", "\x16--- PASS: TestA (0.00s)\r\n\x16PASS\r\n", true},
		{"cut mid-test", "\x16=== RUN   TestA\nsome output\n", false},
		{"failed", "\x16--- FAIL: TestA (0.00s)\n\x16FAIL\n", false},
		{"a test named PASS-like", "\x16=== RUN   TestPASS\n", false},
		{"empty", "", false},
	} {
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(tc.out)
		f.Seek(0, 0)
		if got := passed(f); got != tc.want {
			t.Errorf("%s: passed = %v, want %v", tc.name, got, tc.want)
		}
		if off, _ := f.Seek(0, 1); off != 0 {
			t.Errorf("%s: left at offset %d, want rewound", tc.name, off)
		}
		f.Close()
	}
}
