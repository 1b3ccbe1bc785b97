// Package e2e holds Seine's end-to-end tests: a 3-node lab (test/lab) with
// seine-agent on every node, real pods and real packets. They need root and
// the lab's control-plane binary (SEINE_LAB_KUBE_BIN, which `make test` sets)
// and skip, saying which is missing, otherwise. Every test brings its own lab
// up and takes it down in its cleanup.
package e2e
