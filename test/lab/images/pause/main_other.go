//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "pause: the lab's pod sandbox runs on Linux only")
	os.Exit(1)
}
