package bundle

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"strings"
	"testing"
)

// Secrets as they appear on a node: a service account token (a JWT), a
// static token, a private key, a kubeconfig's client key.
const (
	plantedJWT    = "eyJhbGciOiJSUzI1NiIsImtpZCI6InBsYW50ZWQifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06cGxhbnRlZCJ9.c2lnbmF0dXJlLXBsYW50ZWQtaW4tdGhlLXRlc3Q"
	plantedStatic = "0123456789abcdefPLANTEDstaticTOKEN"
	plantedKeyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPLANTEDPRIVATEKEYMATERIALxxxxxxxxxxxxxxxxxxxxoAoGCCqGSM49\nAwEHoUQDQgAEplantedplantedplanted==\n-----END EC PRIVATE KEY-----\n"
	plantedPass   = "hunter2-planted-password"
)

// PlantedSecrets are the strings no bundle may contain, in the clear or
// base64-encoded (as a kubeconfig or a Secret holds them).
func plantedSecrets() []string {
	keyBody := "MHcCAQEEIPLANTEDPRIVATEKEYMATERIAL"
	return []string{plantedJWT, plantedStatic, keyBody, plantedPass,
		base64.StdEncoding.EncodeToString([]byte(plantedKeyPEM)), base64.StdEncoding.EncodeToString([]byte(plantedStatic))}
}

func TestRedact(t *testing.T) {
	kubeconfig := `apiVersion: v1
kind: Config
users:
- name: seine-agent
  user:
    token: ` + plantedStatic + `
    client-key-data: ` + base64.StdEncoding.EncodeToString([]byte(plantedKeyPEM)) + `
`
	for name, in := range map[string]string{
		"kubeconfig":       kubeconfig,
		"pem":              "key follows\n" + plantedKeyPEM + "done\n",
		"pem cut":          "[... first 100 bytes cut]\n" + plantedKeyPEM[:60],
		"log header":       `time=2026-12-07T12:00:00Z level=INFO msg=request header="Authorization: Bearer ` + plantedStatic + `"` + "\n",
		"log jwt":          "time=x level=WARN msg=\"token review\" got=" + plantedJWT + "\n",
		"slog attr":        "level=DEBUG msg=login token=" + plantedStatic + " password=" + plantedPass + "\n",
		"json":             `{"metadata":{"name":"x"},"data":{"apiToken":"` + plantedStatic + `","password": "` + plantedPass + `"}}`,
		"url password":     "kubeAPIServer: https://admin:" + plantedPass + "@10.0.0.1:6443\n",
		"flag":             "args: [--kube-api-token=" + plantedStatic + "]\n",
		"agent yaml":       "nodeName: n1\nfooSecret: " + plantedPass + "\nbearerToken: '" + plantedJWT + "'\n",
		"basic credential": "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+plantedPass)) + "\n",
	} {
		out := string(Redact([]byte(in)))
		for _, s := range plantedSecrets() {
			if strings.Contains(out, s) {
				t.Errorf("%s: %q survived:\n%s", name, s, out)
			}
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s: nothing redacted:\n%s", name, out)
		}
	}
	// What is not a secret stays as it was: flows, YAML, a log line.
	for _, keep := range []string{
		"n_packets=3, n_bytes=180, table=10, priority=200,ip,in_port=2 actions=ct(table=11,zone=65520)\n",
		"nodeName: n1\nmetricsAddress: 127.0.0.1:10351\nkubeconfig: /etc/seine/kubeconfig\n",
		"time=2026-12-07T12:00:00Z level=INFO msg=\"pod added\" pod=default/secret-keeper\n",
		"kubeAPIServer: https://10.0.0.1:6443\nurl: http://[fd00::1]:80/x\n",
		"-----BEGIN CERTIFICATE-----\nMIIBplanted\n-----END CERTIFICATE-----\n",
	} {
		if got := string(Redact([]byte(keep))); got != keep {
			t.Errorf("Redact changed what holds no secret:\n%s\nto\n%s", keep, got)
		}
	}
}

// TestWriteRedacts: every file of a bundle goes through Redact, whatever
// its source wrote.
func TestWriteRedacts(t *testing.T) {
	var buf bytes.Buffer
	_, err := Write(context.Background(), &buf, []Source{{Name: "agent/log.txt", Collect: func(_ context.Context, w io.Writer) error {
		_, err := io.WriteString(w, "msg=x token="+plantedStatic+"\n"+plantedKeyPEM)
		return err
	}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range unpack(t, buf.Bytes()) {
		for _, s := range plantedSecrets() {
			if strings.Contains(e.body, s) {
				t.Errorf("%s holds %q", e.name, s)
			}
		}
	}
}
