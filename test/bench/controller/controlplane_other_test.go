//go:build !linux

package controller

// afterTests has nothing to remove: the lab benchmark runs on Linux only.
func afterTests() {}
