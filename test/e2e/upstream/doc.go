// Package upstream builds the Kubernetes project's own network e2e suite
// (k8s.io/kubernetes v1.37.2: test/e2e/network, test/e2e/common/network and
// the suite's runner, test/e2e) into one test binary, e2e.test, which
// judges Seine on the lab's real nodes:
//
//	go tool mage e2eBinary   # from the repository root; cached in ~/.cache/seine-lab
//	e2e.test --kubeconfig=... --provider=local --kubectl-path=bin/kubectl \
//	    --ginkgo.focus=... --ginkgo.skip=...
//
// The package has no code of its own besides flag handling: the specs are
// upstream's, unchanged. Which of them run, and why the others do not, is
// in selection.txt; README.md has the flags, the images and the results.
package upstream
