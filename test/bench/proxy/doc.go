// Package proxybench benchmarks Seine's service proxy (see
// bench_linux_test.go and test/bench/README.md).
package proxybench
