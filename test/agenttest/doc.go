// Package agenttest runs one Seine node in a test process: a private OVS in
// a throwaway network namespace with an uplink, the Linux backend, and
// seine-agent itself (its Kubernetes API a client-go fake), ready for the
// real seine-cni driven through libcni as a runtime drives it. Integration
// tests and benchmarks of the pod path share it; StartPair runs two such
// nodes joined by their uplinks. Linux only.
package agenttest
