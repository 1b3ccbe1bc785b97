// Package traceflowbench measures a Traceflow's time from creation to
// Succeeded on a 2-node lab, same node and across nodes, against one
// kube-apiserver write seen through a watch in the same rounds
// (traceflow_linux_test.go). See test/bench/README.md for the numbers.
package traceflowbench
