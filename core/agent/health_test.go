package agent

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestHealthEndpoints(t *testing.T) {
	w := newWorld(t, node("node-1", "172.30.0.11", "")) // never ready: no podCIDR
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w.cfg.HealthAddress = addr
	a, _ := w.start()
	get := func(path string) (int, string) {
		t.Helper()
		var code int
		var body string
		poll(t, "GET "+path, func() (bool, string) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			code, body = resp.StatusCode, strings.TrimSpace(string(b))
			return true, ""
		})
		return code, body
	}
	if code, body := get("/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	// Loopback: Go's profiles too.
	if code, body := get("/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Errorf("/debug/pprof/heap on loopback: %d %.80q, want 200 with a heap profile", code, body)
	}
	if code, body := get("/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("/debug/pprof/profile on loopback: %d, %d bytes", code, len(body))
	}
	poll(t, "waiting for the podCIDR", func() (bool, string) { _, why := a.Ready(); return strings.Contains(why, "podCIDR"), why })
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "podCIDR") {
		t.Errorf("/readyz before setup: %d %q, want 503 naming the podCIDR", code, body)
	}
}

// TestNoProfilesBeyondLoopback: a health address other nodes can reach
// serves no /debug/pprof.
func TestNoProfilesBeyondLoopback(t *testing.T) {
	w := newWorld(t, node("node-1", "172.30.0.11", ""))
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	w.cfg.HealthAddress = "0.0.0.0:" + port
	w.start()
	poll(t, "GET /debug/pprof/", func() (bool, string) {
		resp, err := http.Get("http://127.0.0.1:" + port + "/debug/pprof/")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/debug/pprof/ on 0.0.0.0: %d, want 404", resp.StatusCode)
		}
		return true, ""
	})
}

// TestMetricsEndpointRefusesAnonymous: the HTTPS metrics endpoint answers
// a client without credentials 401 (authenticated scrapes are the lab's
// TestDemo/prometheus, against a real kube-apiserver).
func TestMetricsEndpointRefusesAnonymous(t *testing.T) {
	w := newWorld(t, node("node-1", "172.30.0.11", ""))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w.cfg.MetricsAddress = addr
	w.start()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	poll(t, "GET /metrics", func() (bool, string) {
		resp, err := client.Get("https://" + addr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.TLS == nil {
			t.Errorf("anonymous GET /metrics: %d (TLS %v), want 401 over TLS", resp.StatusCode, resp.TLS != nil)
		}
		return true, ""
	})
}
