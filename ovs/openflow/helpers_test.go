package openflow

import (
	"net"
	"sort"
	"strings"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// dumpLines turns ovs-ofctl dump output into sorted, trimmed lines without
// the reply header (lines starting with "OFPST_" or "NXST_").
func dumpLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "OFPST_") || strings.HasPrefix(l, "NXST_") {
			continue
		}
		lines = append(lines, l)
	}
	sort.Strings(lines)
	return lines
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// marshal encodes m or panics: for messages a test knows to fit.
func marshal(m Message, xid uint32) []byte {
	b, err := Marshal(m, xid)
	if err != nil {
		panic(err)
	}
	return b
}
