package cni

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name     string
		conf     string
		wantCode uint // 0: valid
		wantMsg  string
		check    func(t *testing.T, c *NetConf)
	}{
		{
			name: "minimal",
			conf: `{"cniVersion":"1.1.0","name":"seine","type":"seine"}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Socket() != DefaultSocketPath() || c.Timeout != DefaultRequestTimeout {
					t.Errorf("defaults: socket %q timeout %s", c.Socket(), c.Timeout)
				}
			},
		},
		{
			name: "all fields and unknown keys",
			conf: `{"cniVersion":"0.4.0","name":"n","type":"seine","socketPath":"/run/x.sock","requestTimeout":"5s",
				"runtimeConfig":{"portMappings":[]},"someFutureKey":1,"cni.dev/attachments":[]}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Socket() != "/run/x.sock" || c.Timeout != 5*time.Second || c.RuntimeConfig["portMappings"] == nil {
					t.Errorf("got socket %q timeout %s runtimeConfig %v", c.Socket(), c.Timeout, c.RuntimeConfig)
				}
			},
		},
		{
			name: "prevResult parsed",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.PrevResult == nil {
					t.Error("prevResult not parsed")
				}
			},
		},
		{
			name: "device ID from runtimeConfig (the deviceID capability)",
			conf: `{"cniVersion":"1.1.0","name":"n","type":"seine","runtimeConfig":{"deviceID":"0000:5e:00.2"}}`,
			check: func(t *testing.T, c *NetConf) {
				if id, err := c.VFDeviceID(); id != "0000:5e:00.2" || err != nil {
					t.Errorf("VFDeviceID() = %q, %v", id, err)
				}
			},
		},
		{
			name: "device ID at the top level (as Multus writes it), agreeing with runtimeConfig",
			conf: `{"cniVersion":"1.1.0","name":"n","type":"seine","deviceID":"0000:5e:00.3","runtimeConfig":{"deviceID":"0000:5e:00.3"}}`,
			check: func(t *testing.T, c *NetConf) {
				if id, err := c.VFDeviceID(); id != "0000:5e:00.3" || err != nil {
					t.Errorf("VFDeviceID() = %q, %v", id, err)
				}
			},
		},
		{
			name: "no device ID: a veth pod",
			conf: `{"cniVersion":"1.1.0","name":"n","type":"seine","runtimeConfig":{"portMappings":[]}}`,
			check: func(t *testing.T, c *NetConf) {
				if id, err := c.VFDeviceID(); id != "" || err != nil {
					t.Errorf("VFDeviceID() = %q, %v", id, err)
				}
			},
		},
		{name: "device IDs differ", conf: `{"cniVersion":"1.1.0","name":"n","type":"seine","deviceID":"0000:5e:00.3","runtimeConfig":{"deviceID":"0000:5e:00.2"}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "differ"},
		{name: "device ID not a string", conf: `{"cniVersion":"1.1.0","name":"n","type":"seine","runtimeConfig":{"deviceID":7}}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "runtimeConfig.deviceID 7"},
		{name: "bad JSON", conf: `{"cniVersion":`, wantCode: types.ErrDecodingFailure, wantMsg: "decode network config"},
		{name: "old version", conf: `{"cniVersion":"0.3.1","name":"n","type":"seine"}`, wantCode: types.ErrIncompatibleCNIVersion, wantMsg: `"0.3.1"`},
		{name: "no version", conf: `{"name":"n","type":"seine"}`, wantCode: types.ErrIncompatibleCNIVersion},
		{name: "no name", conf: `{"cniVersion":"1.0.0","type":"seine"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: `"name"`},
		{name: "wrong type", conf: `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: `"bridge"`},
		{name: "ipam", conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","ipam":{"type":"host-local"}}`, wantCode: types.ErrUnsupportedField, wantMsg: "host-local"},
		{name: "relative socket", conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","socketPath":"run/cni.sock"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "run/cni.sock"},
		{name: "bad timeout", conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","requestTimeout":"soon"}`, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "soon"},
		{name: "negative timeout", conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","requestTimeout":"-1s"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "huge timeout", conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","requestTimeout":"1h"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad prevResult", conf: `{"cniVersion":"1.0.0","name":"n","type":"seine","prevResult":{"ips":"x"}}`, wantCode: types.ErrDecodingFailure, wantMsg: "prevResult"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseNetConf([]byte(tt.conf))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("ParseNetConf: %v", err)
				}
				tt.check(t, c)
				return
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v (%T), want a *types.Error with code %d", err, err, tt.wantCode)
			}
			if te.Code != tt.wantCode || !strings.Contains(te.Msg, tt.wantMsg) {
				t.Errorf("got code %d %q, want code %d containing %q", te.Code, te.Msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestParseK8sArgs(t *testing.T) {
	got, err := ParseK8sArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;;OTHER=x=y")
	if err != nil {
		t.Fatal(err)
	}
	want := K8sArgs{PodNamespace: "ns", PodName: "web-0", PodUID: "u-1", PodInfraContainerID: "abc"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, err := ParseK8sArgs(""); err != nil || got != (K8sArgs{}) {
		t.Errorf("empty: %+v %v", got, err)
	}
	if _, err := ParseK8sArgs("K8S_POD_NAME"); err == nil {
		t.Error("a pair without '=' was accepted")
	}
}

func TestCommandPath(t *testing.T) {
	if got := CmdAdd.Path(); got != "/v1/add" {
		t.Errorf("CmdAdd.Path() = %q", got)
	}
	if got := PendingDelDir("/var/run/seine/cni.sock"); got != filepath.Join("/var/run/seine", "pending-del") {
		t.Errorf("PendingDelDir = %q", got)
	}
}

func TestSpoolDel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pending")
	if got, err := ReadPendingDels(dir); err != nil || len(got) != 0 {
		t.Fatalf("missing dir: %v %v", got, err)
	}
	if _, err := SpoolDel(dir, &Request{Command: CmdAdd}); err == nil {
		t.Error("an ADD was spooled")
	}
	first, err := SpoolDel(dir, &Request{Command: CmdDel, ContainerID: "c1", IfName: "eth0", Config: []byte(`{"a":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	// Make the order observable regardless of timestamp granularity.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(first, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := SpoolDel(dir, &Request{Command: CmdDel, ContainerID: "c2", IfName: "eth0", Config: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// Same attachment again replaces the first file rather than adding one.
	if again, err := SpoolDel(dir, &Request{Command: CmdDel, ContainerID: "c2", IfName: "eth0", Config: []byte(`{}`)}); err != nil || filepath.Dir(again) != dir {
		t.Fatal(again, err)
	}
	// A torn temp file from a crashed writer and a stray file are ignored.
	if err := os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte(`{"command":"D`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte(`x`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPendingDels(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Request.ContainerID != "c1" || got[1].Request.ContainerID != "c2" || string(got[0].Request.Config) != `{"a":1}` {
		t.Fatalf("got %+v", got)
	}
	info, err := os.Stat(dir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("spool dir mode %v %v, want 0700", info.Mode(), err)
	}
	// A corrupt spool file is reported, the good ones still returned.
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`nope`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = ReadPendingDels(dir)
	if err == nil || len(got) != 2 {
		t.Errorf("with a corrupt file: %d entries, err %v", len(got), err)
	}
	for _, p := range got {
		if err := RemovePendingDel(p.File); err != nil {
			t.Fatal(err)
		}
		if err := RemovePendingDel(p.File); err != nil {
			t.Errorf("second remove: %v", err)
		}
	}
}
