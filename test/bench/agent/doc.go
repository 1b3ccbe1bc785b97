// Package agentbench measures seine-agent's memory with 100 local pods on a
// one-node lab (rss_linux_test.go). See test/bench/README.md for the numbers.
package agentbench
