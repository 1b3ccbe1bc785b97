package upstream

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The shape of network-policy-api's conformance/base/manifests.yaml: a
// comment-only document, a Namespace, a StatefulSet whose agnhost
// containers serve TCP, UDP and (through porter's environment) SCTP.
const baseManifest = `# Create namespaces
apiVersion: v1
kind: Namespace
metadata:
  name: ns-a
# Create StatefulSets
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: harry
  namespace: ns-a
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: harry-client
          image: agnhost
        - name: harry-80
          image: agnhost
          ports:
            - containerPort: 80
              protocol: TCP
        - name: harry-9003
          image: agnhost
          command: ["/bin/bash", "-c", "/agnhost porter"]
          env:
          - name: SERVE_SCTP_PORT_9003
            value: "foo"
        - name: harry-sctp-port
          image: agnhost
          ports:
            - containerPort: 9005
              protocol: SCTP
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: centaur
spec:
  template:
    spec:
      hostNetwork: true
      containers:
      - name: centaur-{{ index .HostNetworkPorts 0 }}-tcp
        image: agnhost
        ports:
          - containerPort: {{ index .HostNetworkPorts 0 }}
            protocol: TCP
      - name: centaur-{{ index .HostNetworkPorts 6 }}
        image: agnhost
        env:
        - name: SERVE_SCTP_PORT_{{ index .HostNetworkPorts 6 }}
          value: "foo"
`

func TestWithoutSCTPServers(t *testing.T) {
	out, dropped := WithoutSCTPServers([]byte(baseManifest))
	if want := []string{"harry-9003", "harry-sctp-port", "centaur-{{ index .HostNetworkPorts 6 }}"}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %q, want %q", dropped, want)
	}
	want := strings.Replace(baseManifest, `        - name: harry-9003
          image: agnhost
          command: ["/bin/bash", "-c", "/agnhost porter"]
          env:
          - name: SERVE_SCTP_PORT_9003
            value: "foo"
        - name: harry-sctp-port
          image: agnhost
          ports:
            - containerPort: 9005
              protocol: SCTP
`, "", 1)
	want = strings.Replace(want, `      - name: centaur-{{ index .HostNetworkPorts 6 }}
        image: agnhost
        env:
        - name: SERVE_SCTP_PORT_{{ index .HostNetworkPorts 6 }}
          value: "foo"
`, "", 1)
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	// The rest parses as YAML once the template is rendered: the
	// StatefulSet keeps its other containers and fields.
	docs := strings.Split(strings.ReplaceAll(string(out), "{{ index .HostNetworkPorts 0 }}", "34345"), "---\n")
	var sts map[string]any
	if err := yaml.Unmarshal([]byte(docs[1]), &sts); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range sts["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any) {
		names = append(names, c.(map[string]any)["name"].(string))
	}
	if want := []string{"harry-client", "harry-80"}; !slices.Equal(names, want) {
		t.Errorf("containers kept %q, want %q", names, want)
	}
	// A policy's rules naming SCTP are not containers: kept.
	policy := "spec:\n  ingress:\n  - name: allow-sctp\n    protocols:\n    - protocol: SCTP\n"
	if out, dropped := WithoutSCTPServers([]byte(policy)); string(out) != policy || len(dropped) != 0 {
		t.Errorf("a policy changed: %q, dropped %q", out, dropped)
	}
	// Without SCTP servers: nothing more dropped.
	if again, dropped := WithoutSCTPServers(out); len(dropped) != 0 || string(again) != string(out) {
		t.Errorf("second pass dropped %q", dropped)
	}
}
