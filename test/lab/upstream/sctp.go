package upstream

import (
	"regexp"
	"strings"
)

var (
	containersLine = regexp.MustCompile(`^(\s*)containers:\s*$`)
	itemLine       = regexp.MustCompile(`^(\s*)-\s+name:\s*"?(.*?)"?\s*$`)
	sctpLine       = regexp.MustCompile(`SERVE_SCTP_PORT_|protocol:\s*"?SCTP`)
)

// WithoutSCTPServers returns the manifest with every container that serves
// SCTP left out of its `containers:` lists (a containerPort of protocol
// SCTP, or agnhost porter told to serve one by an environment variable
// SERVE_SCTP_PORT_<n>), and the names of the containers it left out. This
// machine's kernel has no SCTP: such a container exits at once (porter
// cannot listen) and its pod is never Ready.
//
// It edits the text, not parsed YAML: network-policy-api's manifests are Go
// templates ({{ index .HostNetworkPorts 0 }} in names and ports, rendered by
// the suite when it applies them), which are not YAML until rendered. A
// container is the list item starting at `- name:` right under a
// `containers:` line and the lines indented deeper below it; every other
// line (comments, templates, policy rules naming SCTP) stays as it was.
func WithoutSCTPServers(manifest []byte) ([]byte, []string) {
	lines := strings.SplitAfter(string(manifest), "\n")
	var out strings.Builder
	var dropped []string
	for i := 0; i < len(lines); {
		m := containersLine.FindStringSubmatch(lines[i])
		out.WriteString(lines[i])
		i++
		if m == nil {
			continue
		}
		listIndent := len(m[1])
		// The list: its items, until a line indented no deeper than
		// `containers:` (YAML allows the items at the key's own indent).
		for i < len(lines) {
			it := itemLine.FindStringSubmatch(lines[i])
			if it == nil || len(it[1]) < listIndent {
				break
			}
			itemIndent := len(it[1])
			j := i + 1
			for j < len(lines) && (strings.TrimSpace(lines[j]) == "" || indent(lines[j]) > itemIndent) {
				j++
			}
			block := strings.Join(lines[i:j], "")
			if sctpLine.MatchString(block) {
				dropped = append(dropped, it[2])
			} else {
				out.WriteString(block)
			}
			i = j
		}
	}
	return []byte(out.String()), dropped
}

func indent(line string) int {
	return len(line) - len(strings.TrimLeft(line, " \t"))
}
