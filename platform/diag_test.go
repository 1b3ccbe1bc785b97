package platform

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestDiagSections(t *testing.T) {
	var b strings.Builder
	s := NewDiagSections(&b)
	s.Add("ok", func(w io.Writer) error { _, err := io.WriteString(w, "fine\n"); return err })
	boom := errors.New("boom")
	s.Add("bad", func(w io.Writer) error { io.WriteString(w, "partial\n"); return boom })
	want := "== ok ==\nfine\n\n== bad ==\npartial\nerror: boom\n\n"
	if b.String() != want {
		t.Errorf("wrote %q, want %q", b.String(), want)
	}
	if err := s.Err(); !errors.Is(err, boom) || !strings.Contains(err.Error(), "collect diagnostics: bad: boom") {
		t.Errorf("Err() = %v", err)
	}
	if err := NewDiagSections(io.Discard).Err(); err != nil {
		t.Errorf("no failed section: Err() = %v", err)
	}
}
