// Package flowexportbench measures one flow-export cycle (dump, parse,
// follow, name, encode and send every connection as an IPFIX record) over
// 50,000 connections held by a real ovs-vswitchd's userspace conntrack,
// against ovs-vswitchd's own dump of the same connections alone in the
// same run. Linux-only (flowexport_linux_test.go); see test/bench/README.md.
package flowexportbench
