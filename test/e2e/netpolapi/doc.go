// Package netpolapi builds the conformance suite of
// sigs.k8s.io/network-policy-api (its conformance package, v0.3.0: the
// ClusterNetworkPolicy tests, Admin and Baseline tiers) into one test
// binary, netpolapi.test, which judges Seine on the lab's real nodes:
//
//	go tool mage netpolAPIBinary   # from the repository root; cached in ~/.cache/seine-lab
//	KUBECONFIG=... netpolapi.test -test.v -seine.skip=<regex>
//
// The tests are upstream's, unchanged (tests.ConformanceTests, run by its
// suite). What this package adds: the suite's manifests embedded from a
// copy of the module's conformance/base that the build writes beside this
// file, with the SCTP servers of the base StatefulSets left out (this
// machine's kernel has no SCTP: they would crash-loop and no base pod would
// ever be Ready), and the tests the runner's selection skips reported as
// skipped. README.md has the results; selection.txt says what runs and why.
package netpolapi
