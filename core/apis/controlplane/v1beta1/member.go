package v1beta1

import (
	"strconv"
	"strings"
)

// MemberKey identifies a group member with everything an agent uses: two
// members with the same key are interchangeable. Patches add and remove
// whole members by this key.
func MemberKey(m *GroupMember) string {
	var b strings.Builder
	b.WriteString(m.Pod.Namespace)
	b.WriteByte('/')
	b.WriteString(m.Pod.Name)
	b.WriteByte('|')
	b.WriteString(m.NodeName)
	if m.Node != "" {
		b.WriteString("|node:")
		b.WriteString(m.Node)
	}
	for _, ip := range m.IPs {
		b.WriteByte('|')
		b.Write(ip)
	}
	for _, p := range m.NamedPorts {
		b.WriteByte('|')
		b.WriteString(p.Name)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(p.Port)))
		b.WriteString(string(p.Protocol))
	}
	return b.String()
}
