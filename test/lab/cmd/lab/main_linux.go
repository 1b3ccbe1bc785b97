// Command lab runs Seine's lab: a real multi-node Kubernetes cluster on one
// Linux machine (see test/lab/README.md).
//
//	lab up [--nodes N] [--windows-nodes K] --kube-bin PATH
//	lab down | status | memory | kubeconfig | demo
//	lab exec <namespace/pod> -- command [args...]
//	lab check <namespace/pod>
//	lab logs <component>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/seine-cni/seine/test/lab"
)

const usage = `usage: lab <command> [flags]

commands:
  up [--nodes N] [--windows-nodes K] [--kube-proxy iptables|nftables] [--kube-bin PATH]   bring the lab up
  install-seine [-f seine.yml] [--dns=false]   real nodes (up --kubelet real --cni none):
                            kubectl apply the manifest with the lab's patches (images,
                            userspace datapath, node-local API server), wait until Seine is
                            ready, then install the cluster DNS (install-dns) unless --dns=false
  install-dns               real nodes with a network plugin: CoreDNS in kube-system behind
                            the kube-dns Service (the kubelets' clusterDNS); waits until ready
  uninstall-seine [-f seine-cleanup.yml]   remove Seine as installer/kubernetes/README.md
                            says (agents, then node cleanup, then kubectl delete)
  down                      stop everything and remove all the lab made
  status                    components, nodes and pods
  memory                    what the lab's processes hold in memory (PSS and RSS), by
                            component: control plane, node programs, containers
  kubeconfig                print the admin kubeconfig path (export KUBECONFIG=$(lab kubeconfig))
  demo [--replicas N]       run a Deployment across the nodes and probe every pod pair;
                            with Seine, then apply a NetworkPolicy and show it realized and enforced
  exec <ns/pod> -- cmd...   run a command inside a pod's network namespace
  check <ns/pod>            CNI CHECK for a running pod, as a runtime would call it
  logs <component>          print a component's log (see lab status for names)
`

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, os.Args[1], os.Args[2:]); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, cmd string, args []string) error {
	fs := flag.NewFlagSet("lab "+cmd, flag.ExitOnError)
	stateDir := fs.String("state-dir", "/run/seine-lab", "the lab's state directory")
	switch cmd {
	case "up":
		c := &lab.Config{}
		fs.IntVar(&c.Nodes, "nodes", 3, "number of nodes")
		fs.IntVar(&c.WindowsNodes, "windows-nodes", 0, "pose the last K nodes as Windows nodes")
		fs.BoolVar(&c.UpstreamExperimental, "upstream-experimental", false, "install the upstream ClusterNetworkPolicy's experimental CRD (domainNames peers) instead of the standard one")
		fs.StringVar(&c.KubeProxy, "kube-proxy", "", "run kube-proxy on every node in this mode (iptables or nftables); seine-agent leaves Services to it")
		fs.StringVar(&c.KubeBin, "kube-bin", os.Getenv("SEINE_LAB_KUBE_BIN"), "the labkube control-plane binary (make kube-binaries builds it)")
		fs.StringVar(&c.CNIBin, "cni-bin", "", "directory of CNI plugins (default: cni/ beside this binary)")
		fs.StringVar(&c.CNI, "cni", lab.CNISeine, "the nodes' network: seine, or ptp (the reference plugins)")
		fs.StringVar(&c.SeineBin, "seine-bin", "", "directory with seine-agent, seine-cni and seine-controller (default: linux/ beside this binary)")
		fs.StringVar(&c.TrafficMode, "traffic-mode", "", "seine: encap, noEncap or hybrid (default encap)")
		fs.StringVar(&c.TunnelType, "tunnel-type", "", "seine: geneve, vxlan or gre (default geneve)")
		fs.StringVar(&c.Kubelet, "kubelet", lab.KubeletStandIn, "the nodes' kubelet: standin (the lab's, pods without containers) or real (kubelet, containerd and runc)")
		fs.StringVar(&c.RuntimeBin, "runtime-bin", "", "real nodes: directory with containerd, containerd-shim-runc-v2, ctr and runc (make images builds it)")
		fs.StringVar(&c.ImagesDir, "images", "", "real nodes: directory of image tarballs and images.json (default: images/ beside this binary)")
		fs.IntVar(&c.APIPort, "api-port", 0, "kube-apiserver's port (default 16443)")
		fs.IntVar(&c.EtcdPort, "etcd-port", 0, "etcd's client port; the peer port is the next one (default 12379)")
		fs.StringVar(&c.NSPrefix, "ns-prefix", "", "prefix of the lab's network namespace and link names (default seine-lab-; a second lab beside the default one needs its own)")
		fs.Parse(args)
		c.StateDir = *stateDir
		self, err := os.Executable()
		if err != nil {
			return err
		}
		c.LabBin = self
		if c.Kubelet == lab.KubeletReal && c.ImagesDir == "" {
			c.ImagesDir = filepath.Join(filepath.Dir(self), "images")
		}
		if c.CNI == lab.CNISeine && c.SeineBin == "" {
			c.SeineBin = filepath.Join(filepath.Dir(self), "linux")
		}
		if err := lab.Up(ctx, log, c); err != nil {
			return err
		}
		fmt.Printf("lab is up: export KUBECONFIG=%s\n", c.AdminKubeconfig())
		return nil
	case "install-seine":
		file := fs.String("f", "installer/kubernetes/seine.yml", "the manifest")
		dns := fs.Bool("dns", true, "then install the cluster DNS (install-dns)")
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		if err := c.InstallSeine(ctx, log, b); err != nil {
			return err
		}
		fmt.Printf("seine is installed (the applied manifest: %s)\n", c.SeineManifestPath())
		if !*dns {
			return nil
		}
		if err := c.InstallClusterDNS(ctx, log); err != nil {
			return err
		}
		fmt.Printf("cluster DNS is installed at %s (the applied manifest: %s)\n", c.ClusterDNSIP(), c.ClusterDNSManifestPath())
		return nil
	case "install-dns":
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		if err := c.InstallClusterDNS(ctx, log); err != nil {
			return err
		}
		fmt.Printf("cluster DNS is installed at %s (the applied manifest: %s)\n", c.ClusterDNSIP(), c.ClusterDNSManifestPath())
		return nil
	case "uninstall-seine":
		file := fs.String("f", "installer/kubernetes/seine-cleanup.yml", "the cleanup manifest")
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		if err := c.UninstallSeine(ctx, log, b); err != nil {
			return err
		}
		fmt.Println("seine is uninstalled and every node cleaned")
		return nil
	case "down":
		fs.Parse(args)
		return lab.Down(ctx, log, *stateDir)
	case "kubeconfig":
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		fmt.Println(c.AdminKubeconfig())
		return nil
	case "status":
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.Status(ctx, c, os.Stdout)
	case "memory":
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		uses, err := c.Memory()
		if err != nil {
			return err
		}
		return lab.WriteMemory(os.Stdout, uses)
	case "demo":
		replicas := fs.Int("replicas", 6, "replicas of the demo Deployment")
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.Demo(ctx, c, os.Stdout, int32(*replicas))
	case "exec":
		fs.Parse(args)
		rest := fs.Args()
		if len(rest) >= 2 && rest[1] == "--" {
			rest = append(rest[:1], rest[2:]...)
		}
		if len(rest) < 2 {
			return errors.New("usage: lab exec <ns/pod> -- command [args...]")
		}
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.Exec(ctx, c, rest[0], rest[1:], os.Stdin, os.Stdout, os.Stderr)
	case "check":
		fs.Parse(args)
		if fs.NArg() != 1 {
			return errors.New("usage: lab check <ns/pod>")
		}
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.Check(ctx, c, fs.Arg(0))
	case "logs":
		fs.Parse(args)
		if fs.NArg() != 1 {
			return errors.New("usage: lab logs <component>")
		}
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		path, err := c.LogPath(fs.Arg(0))
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(os.Stdout, f)
		return err

	// Internal commands: the lab starts these itself.
	case "kubelet":
		node := fs.String("node", "", "node name")
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.RunKubelet(ctx, log, c, *node)
	case "kubelet-check":
		node := fs.String("node", "", "node name")
		uid := fs.String("pod-uid", "", "pod UID")
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.KubeletCheck(ctx, log, c, *node, *uid)
	case "api-proxy":
		fs.Parse(args)
		c, err := lab.Load(*stateDir)
		if err != nil {
			return err
		}
		return lab.ServeProxies(ctx, log, c, "127.0.0.1:"+strconv.Itoa(c.APIPort), c.APIListens())
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}
