// Command labkube is the lab's Kubernetes control plane in one binary: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, chosen by the
// first argument. One multi-call binary links the shared Kubernetes packages
// once, which roughly halves the first build on a 2-core machine.
//
// It lives in its own module so that Seine's go.mod never depends on
// k8s.io/kubernetes.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labkube etcd|kube-apiserver|kube-controller-manager|kube-scheduler [flags]")
		os.Exit(2)
	}
	var cmd *cobra.Command
	switch os.Args[1] {
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, os.Args[2:]...))
		return
	case "kube-apiserver":
		cmd = apiserver.NewAPIServerCommand()
	case "kube-controller-manager":
		cmd = controllermanager.NewControllerManagerCommand()
	case "kube-scheduler":
		cmd = scheduler.NewSchedulerCommand()
	default:
		fmt.Fprintf(os.Stderr, "labkube: unknown component %q\n", os.Args[1])
		os.Exit(2)
	}
	cmd.SetArgs(os.Args[2:])
	os.Exit(cli.Run(cmd))
}
