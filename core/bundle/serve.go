package bundle

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/pprof"
	"strconv"
	"time"
)

// Path is where seine-agent and seine-controller serve their part of a
// cluster support bundle, on their authenticated HTTPS API: a client needs
// get on this non-resource URL (ClusterRole seine-supportbundle).
const Path = "/supportbundle"

// SinceParam is the query parameter (seconds) that limits logs to the
// latest ones: GET /supportbundle?since=3600.
const SinceParam = "since"

// Handler serves a bundle of the sources for a request, as Write makes it
// (gzipped tar, summary.txt first, every file redacted). The sources get
// the request's since: the zero time when it has none. The handler does
// not authorize; wrap it.
func Handler(sources func(since time.Time) []Source, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var since time.Time
		if s := r.URL.Query().Get(SinceParam); s != "" {
			secs, err := strconv.ParseInt(s, 10, 64)
			if err != nil || secs < 0 {
				http.Error(w, fmt.Sprintf("%s=%q: want seconds", SinceParam, s), http.StatusBadRequest)
				return
			}
			if secs > 0 {
				since = time.Now().Add(-time.Duration(secs) * time.Second)
			}
		}
		var buf bytes.Buffer
		if _, err := Write(r.Context(), &buf, sources(since), o); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})
}

// Profiles are this process's heap profile (in pprof's text format, which
// `go tool pprof` reads) and every goroutine's stack, under dir.
func Profiles(dir string) []Source {
	profile := func(name string, debug int) Source {
		return Source{Name: dir + "/" + name + ".txt", Collect: func(_ context.Context, w io.Writer) error {
			p := pprof.Lookup(name)
			if p == nil {
				return fmt.Errorf("no %s profile", name)
			}
			return p.WriteTo(w, debug)
		}}
	}
	return []Source{profile("heap", 1), profile("goroutine", 2)}
}
