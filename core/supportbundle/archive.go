package supportbundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/seine-cni/seine/core/bundle"
)

// archive is the bundle being written: files are added from every
// collecting goroutine, each redacted (bundle.Redact) on its way in,
// whatever an agent already did.
type archive struct {
	mu    sync.Mutex
	gz    *gzip.Writer
	tw    *tar.Writer
	mtime time.Time
	err   error
	names map[string]bool
}

func newArchive(w io.Writer, mtime time.Time) *archive {
	gz := gzip.NewWriter(w)
	return &archive{gz: gz, tw: tar.NewWriter(gz), mtime: mtime, names: map[string]bool{}}
}

// add writes a file; the first error sticks and is close's.
func (a *archive) add(name string, body []byte) {
	body = bundle.Redact(body)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || a.names[name] {
		return
	}
	a.names[name] = true
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: a.mtime, Typeflag: tar.TypeReg}
	if a.err = a.tw.WriteHeader(hdr); a.err == nil {
		_, a.err = a.tw.Write(body)
	}
}

// addSource collects s into dir+s.Name; a failure is written after what
// it collected.
func (a *archive) addSource(ctx context.Context, dir string, s bundle.Source) error {
	var buf bytes.Buffer
	err := s.Collect(ctx, &buf)
	if err != nil {
		fmt.Fprintf(&buf, "\nerror: %v\n", err)
	}
	a.add(dir+s.Name, buf.Bytes())
	return err
}

func (a *archive) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return fmt.Errorf("write bundle: %w", a.err)
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	if err := a.gz.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// cleanName keeps a part's file inside its directory.
func cleanName(name string) string {
	return strings.TrimLeft(path.Clean("/"+name), "/")
}

func trimLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func cmpString(a, b string) int { return strings.Compare(a, b) }

func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // see DefaultClient
}
