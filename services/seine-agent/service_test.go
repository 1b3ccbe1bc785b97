package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kardianos/service"
)

// TestSystemdUnit compares the unit with testdata/seine-agent.service
// (go test -run TestSystemdUnit -update rewrites it).
func TestSystemdUnit(t *testing.T) {
	got := systemdUnit(serviceSpec{
		Executable: "/usr/local/bin/seine-agent",
		Config:     "/etc/seine/seine agent.yaml",
		LogFile:    "/var/log/seine/agent-%h.log",
	})
	golden := filepath.Join("testdata", "seine-agent.service")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("systemd unit differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestSystemdQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/seine-agent": "/usr/bin/seine-agent",
		"a b":                  `"a b"`,
		`say "hi"`:             `"say \"hi\""`,
		`C:\x`:                 `"C:\\x"`,
		"100%":                 "100%%",
		"$HOME":                "$$HOME",
		"":                     `""`,
	} {
		if got := systemdQuote(in); got != want {
			t.Errorf("systemdQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestControllerNeedsItsServiceManager: on a host whose service manager is
// not the one the service is made for (this VM: SysV), the subcommands say
// so instead of installing something else.
func TestControllerNeedsItsServiceManager(t *testing.T) {
	if service.Platform() == servicePlatform {
		t.Skipf("this host runs %s", servicePlatform)
	}
	_, err := newController(serviceSpec{Executable: "/usr/local/bin/seine-agent", Config: "/etc/seine/seine-agent.yaml"})
	if err == nil || !strings.Contains(err.Error(), servicePlatform) {
		t.Fatalf("newController = %v, want an error naming %s", err, servicePlatform)
	}
}
