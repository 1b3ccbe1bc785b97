//go:build !linux

// Command lab runs Seine's lab, which needs Linux network namespaces.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "lab: the lab needs Linux (network namespaces, Open vSwitch userspace datapath)")
	os.Exit(1)
}
