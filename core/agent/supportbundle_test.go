package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/bundle"
)

// TestSupportBundleHandler: the agent's part of a cluster bundle holds
// its configuration, its recent log, pods, OVS and host sections and its
// profiles, with the secrets planted in its configuration and its log
// redacted, byte by byte.
func TestSupportBundleHandler(t *testing.T) {
	const (
		password = "planted-password-in-the-agent-config"
		token    = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwbGFudGVkLWluLWxvZyJ9.cGxhbnRlZHNpZ25hdHVyZQ"
		keyBody  = "MHcCAQEEIPlantedKeyInTheAgentLog0000000"
	)
	w := newWorld(t, node("node-1", "172.30.0.11", "10.10.1.0/24"))
	w.cfg.KubeAPIServer = "https://admin:" + password + "@172.30.0.1:6443"
	ring := bundle.NewLogRing(1 << 20)
	log := slog.New(ring.Handler(slog.NewTextHandler(io.Discard, nil)))
	a, err := New(Options{Config: w.cfg, Logger: log, Kube: w.kube, OVSDB: w.db, Backend: w.backend, NewSwitch: w.sw.factory, RecentLog: ring})
	if err != nil {
		t.Fatal(err)
	}
	a.log.Info("token review", "header", "Authorization: Bearer "+token)
	a.log.Warn("loaded key", "pem", "-----BEGIN EC PRIVATE KEY-----\n"+keyBody+"\n-----END EC PRIVATE KEY-----")

	srv := httptest.NewServer(a.supportBundleHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + bundle.Path + "?since=3600")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", resp.Status, raw)
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	for _, name := range []string{"summary.txt", "agent/config.yaml", "agent/log.txt", "agent/pods.txt", "ovs/ovsdb.txt", "ovs/flows.txt",
		"host/diagnostics.txt", "pprof/heap.txt", "pprof/goroutine.txt"} {
		if _, ok := files[name]; !ok {
			t.Errorf("no %s in the agent's part", name)
		}
	}
	if s := files["agent/config.yaml"]; !strings.Contains(s, "nodeName: node-1") || !strings.Contains(s, "https://admin:"+bundle.Redacted+"@172.30.0.1:6443") {
		t.Errorf("config:\n%s", s)
	}
	if s := files["agent/log.txt"]; !strings.Contains(s, "msg=\"token review\"") || !strings.Contains(s, "loaded key") {
		t.Errorf("log:\n%s", s)
	}
	if s := files["pprof/goroutine.txt"]; !strings.Contains(s, "goroutine ") {
		t.Errorf("goroutines:\n%.300s", s)
	}
	for name, body := range files {
		for _, secret := range []string{password, token, keyBody} {
			if strings.Contains(body, secret) {
				t.Errorf("%s holds %q", name, secret)
			}
		}
	}
}
