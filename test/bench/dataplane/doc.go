// Package dataplanebench measures pod-to-pod TCP throughput across two lab
// nodes through Seine's pipeline against a plain OVS bridge with the NORMAL
// action on the same nodes' ovs-vswitchd (dataplane_linux_test.go). See
// test/bench/README.md for the numbers.
package dataplanebench
