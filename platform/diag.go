package platform

import (
	"errors"
	"fmt"
	"io"
)

// DiagSections writes a backend's part of a support bundle as titled
// sections: a section that fails says so inline and the others still run.
// Backends' Diagnostics.Collect use it so every OS's bundle reads the same.
type DiagSections struct {
	w    io.Writer
	errs []error
}

// NewDiagSections writes sections to w.
func NewDiagSections(w io.Writer) *DiagSections { return &DiagSections{w: w} }

// Add writes "== title ==", then what fn writes, then fn's error if any,
// and a blank line; the error is kept for Err.
func (d *DiagSections) Add(title string, fn func(io.Writer) error) {
	fmt.Fprintf(d.w, "== %s ==\n", title)
	if err := fn(d.w); err != nil {
		fmt.Fprintf(d.w, "error: %v\n", err)
		d.errs = append(d.errs, fmt.Errorf("%s: %w", title, err))
	}
	fmt.Fprintln(d.w)
}

// Err joins the errors of the sections that failed, or returns nil.
func (d *DiagSections) Err() error {
	if err := errors.Join(d.errs...); err != nil {
		return fmt.Errorf("collect diagnostics: %w", err)
	}
	return nil
}
