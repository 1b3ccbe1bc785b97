// Package netpol is Seine's NetworkPolicy end-to-end suite: the cases of the
// upstream Kubernetes NetworkPolicy e2e suite (test/e2e/network/netpol), run
// on one 3-node lab with real packets. Pods a, b and c in namespaces x, y and
// z (nine pods spread over the nodes) answer on TCP and UDP ports 80 and 81
// (and SCTP where the kernel has it); each case creates policies and compares
// the full 9x9 reachability matrix with the expected one, where a denied
// probe must time out (a drop), not be refused. See README.md for the cases.
// The tests are Linux only and need what test/lab/labtest needs.
package netpol
