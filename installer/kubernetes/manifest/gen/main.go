// Command gen writes installer/kubernetes/seine.yml (or, with -cleanup,
// seine-cleanup.yml) from the manifest package.
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
	cleanup := flag.Bool("cleanup", false, "write the node cleanup DaemonSet (seine-cleanup.yml) instead")
	flag.Parse()
	render := manifest.YAML
	if *cleanup {
		render = manifest.CleanupYAML
	}
	b, err := render(manifest.Options{Image: *image, OVSImage: *ovsImage})
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
