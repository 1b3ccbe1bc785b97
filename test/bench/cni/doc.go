// Package cnibench measures CNI ADD latency through Seine's real path
// (libcni, seine-cni, seine-agent, IPAM, veth, OVS port, flows) next to the
// raw cost of the same steps done by hand in the same run. The benchmark is
// Linux-only (cni_linux_test.go); see test/bench/README.md for the numbers.
package cnibench
