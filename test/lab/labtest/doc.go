// Package labtest brings up a lab running Seine for a test or a benchmark in
// another package: it checks what the lab needs (skipping with the precise
// reason, or failing under CI where a skip would hide a broken set-up),
// builds seine-agent, seine-cni and the lab CLI once per test binary, and
// takes the lab down in the test's cleanup. Linux only.
package labtest
