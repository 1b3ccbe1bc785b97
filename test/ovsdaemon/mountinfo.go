package ovsdaemon

import "strings"

// mountinfoHas reports whether /proc/self/mountinfo text lists path as a mount
// point (field 5; spaces and other specials are octal-escaped there).
func mountinfoHas(mountinfo, path string) bool {
	esc := strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`).Replace(path)
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == esc {
			return true
		}
	}
	return false
}
