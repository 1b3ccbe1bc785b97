// Package agentload measures what policy load costs the rest of a node, on a
// real node (test/agenttest: OVS in a network namespace, the agent, pods
// through seine-cni), no lab: CNI ADD and DEL latency with 50,000 policy
// flows installed while a peer node flaps (cni_linux_test.go), and the
// round-trip time of an unrelated pod pair while members of a namespace
// that 50 policies allow from come and go at 2 pods/s, with the datapath
// flushes that costs (churn_linux_test.go). See test/bench/README.md.
package agentload
