// Package nodecheck is what `seinectl check` and `seinectl node-prep` do on
// one node, platform-neutrally: each step is a named Result with OK/FAIL and
// a reason, so a person (or the PowerShell module on Windows) sees at once
// what is wrong. What differs per OS (directory permissions, executables,
// the OpenFlow transport) comes in through Host and the options; the OS
// implementations live in services/seinectl.
package nodecheck

// Result is one check or preparation step.
type Result struct {
	// Name says what was checked, e.g. "agent config" or "binary seine-agent".
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail is what was found when OK, the reason when not.
	Detail string `json:"detail"`
	// Target is the file, endpoint or URL the step looked at (shown by -o wide).
	Target string `json:"target,omitempty"`
	// Changed is set by node-prep steps that modified the node.
	Changed bool `json:"changed,omitempty"`
}

// Report is the outcome of a run, in the order the steps ran.
type Report struct {
	Results []Result `json:"results"`
}

// Failed reports whether any step failed.
func (r *Report) Failed() bool {
	for _, res := range r.Results {
		if !res.OK {
			return true
		}
	}
	return false
}

func (r *Report) ok(name, target, detail string) {
	r.Results = append(r.Results, Result{Name: name, OK: true, Target: target, Detail: detail})
}

func (r *Report) fail(name, target, detail string) {
	r.Results = append(r.Results, Result{Name: name, Target: target, Detail: detail})
}

// add records err as a failure, or detail as success.
func (r *Report) add(name, target string, err error, detail string) bool {
	if err != nil {
		r.fail(name, target, err.Error())
		return false
	}
	r.ok(name, target, detail)
	return true
}
