// Command gen writes installer/kubernetes/seine.yml from the manifest package.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/seine-cni/seine/installer/kubernetes/manifest"
)

func main() {
	out := flag.String("o", "-", "output file (- for stdout)")
	image := flag.String("image", manifest.DefaultImage, "container image of every Seine container")
	ovsImage := flag.String("ovs-image", manifest.DefaultOVSImage, "container image of the seine-ovs DaemonSet (Open vSwitch)")
	flag.Parse()
	b, err := manifest.YAML(manifest.Options{Image: *image, OVSImage: *ovsImage})
	if err == nil {
		if *out == "-" {
			_, err = os.Stdout.Write(b)
		} else {
			err = os.WriteFile(*out, b, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
