// Package bundle writes a Seine support bundle: a gzipped tar of text files,
// one per source (the agent's configuration and logs, the OVS database and
// flows, the OS's diagnostics, what the cluster says about Seine), and
// summary.txt first, listing every source and whether it was collected.
// A source that fails does not stop the others; its file holds what it
// wrote before failing and the error. Every file goes through Redact.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/seine-cni/seine/platform"
)

// Source is one file of the bundle.
type Source struct {
	// Name is the file's path in the bundle, e.g. "ovs/flows.txt".
	Name string
	// Collect writes the file's content.
	Collect func(ctx context.Context, w io.Writer) error
}

// SummaryFile is the first file of every bundle.
const SummaryFile = "summary.txt"

// Options tune Write.
type Options struct {
	// SourceTimeout bounds each source; 0 means 20s.
	SourceTimeout time.Duration
	// Now stamps the files (time.Now if nil).
	Now func() time.Time
}

// Write collects every source and writes the bundle to w. It returns an
// error joining the sources' failures (the bundle is complete regardless)
// or, first, an error writing w.
func Write(ctx context.Context, w io.Writer, sources []Source, o Options) (collectErr error, err error) {
	timeout := o.SourceTimeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	type file struct {
		name string
		body []byte
	}
	var (
		files   []file
		summary bytes.Buffer
		errs    []error
	)
	fmt.Fprintf(&summary, "Seine support bundle, %s\n\n", now().UTC().Format(time.RFC3339))
	for _, s := range sources {
		var buf bytes.Buffer
		start := time.Now()
		cerr := collect(ctx, timeout, s, &buf)
		took := time.Since(start).Round(time.Millisecond)
		if cerr != nil {
			fmt.Fprintf(&buf, "\nerror: %v\n", cerr)
			fmt.Fprintf(&summary, "FAIL  %-28s %s (%s)\n", s.Name, cerr, took)
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, cerr))
		} else {
			fmt.Fprintf(&summary, "OK    %-28s %d bytes (%s)\n", s.Name, buf.Len(), took)
		}
		files = append(files, file{s.Name, Redact(buf.Bytes())})
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	mtime := now()
	for _, f := range append([]file{{SummaryFile, summary.Bytes()}}, files...) {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: mtime, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write bundle: %w", err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, fmt.Errorf("write bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	return errors.Join(errs...), nil
}

func collect(ctx context.Context, timeout time.Duration, s Source, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return s.Collect(ctx, w)
}

// File is a copy of the file at path.
func File(name, path string) Source {
	return Source{Name: name, Collect: func(_ context.Context, w io.Writer) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}}
}

// Tail is the last max bytes of the file at path (logs grow).
func Tail(name, path string, max int64) Source {
	return Source{Name: name, Collect: func(_ context.Context, w io.Writer) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.Size() > max {
			if _, err := f.Seek(fi.Size()-max, io.SeekStart); err != nil {
				return err
			}
			fmt.Fprintf(w, "[... first %d bytes cut]\n", fi.Size()-max)
		}
		_, err = io.Copy(w, f)
		return err
	}}
}

// Diagnostics is the OS part of the bundle (platform.Diagnostics); a nil d
// fails with why (newDiagErr), e.g. an OS without a backend.
func Diagnostics(name string, d platform.Diagnostics, newDiagErr error) Source {
	return Source{Name: name, Collect: func(ctx context.Context, w io.Writer) error {
		if d == nil {
			return newDiagErr
		}
		return d.Collect(ctx, w)
	}}
}

// FailedSources are the sources a bundle's summary.txt says failed.
func FailedSources(summary []byte) []string {
	var out []string
	for line := range strings.Lines(string(summary)) {
		if rest, ok := strings.CutPrefix(line, "FAIL  "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				out = append(out, f[0])
			}
		}
	}
	return out
}

// Unpack reads a bundle (a gzipped tar, as Write makes it) and calls fn
// with each regular file, in order; fn's error stops it.
func Unpack(r io.Reader, fn func(name string, body []byte) error) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if err := fn(h.Name, body); err != nil {
			return err
		}
	}
}
