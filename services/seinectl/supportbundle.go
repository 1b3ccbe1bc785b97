package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/core/supportbundle"
)

// supportBundleOptions are `seinectl supportbundle`'s flags; supportBundleRun
// turns them into core/supportbundle's Options.
type supportBundleOptions struct {
	dir, selector, namespace, agentCA, controller string
	since, timeout                                time.Duration
	parallel, agentPort                           int
	agentAddrs                                    map[string]string
}

func (c *cli) supportBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "supportbundle [-d DIR] [-l SELECTOR] [--since DURATION]",
		Short: "Collect the whole cluster's support bundle into one archive",
		Long: `Collects a support bundle from the whole cluster into one archive,
DIR/seine-supportbundle-<time>.tar.gz: from seine-controller and from the
seine-agent of every selected node, in parallel, over their HTTPS API as
the serviceaccount seine-supportbundle (a 10-minute token; you need create
on its serviceaccounts/token), and Seine's objects, ConfigMaps and pod logs
from the kube-apiserver. Never Secrets; tokens and keys are redacted. A
node that does not answer within --timeout is reported in the archive and
here; the rest is written all the same (exit status 1).`,
		Example: `  seinectl supportbundle -d /tmp --since 1h
  seinectl supportbundle -l kubernetes.io/os=windows --context prod`,
		Args: noArgs,
	}
	var o supportBundleOptions
	f := cmd.Flags()
	f.StringVarP(&o.dir, "dir", "d", ".", "the directory the archive is written to")
	f.StringVarP(&o.selector, "selector", "l", "", "the nodes to collect from (a label selector; default all)")
	f.DurationVar(&o.since, "since", 0, "only logs of the last DURATION (e.g. 1h); default all the agents keep")
	f.StringVar(&o.namespace, "seine-namespace", "kube-system", "Seine's namespace")
	f.DurationVar(&o.timeout, "timeout", supportbundle.DefaultTimeout, "how long to wait for each node")
	f.IntVar(&o.parallel, "parallel", supportbundle.DefaultParallel, "nodes collected at once")
	f.IntVar(&o.agentPort, "agent-port", supportbundle.DefaultAgentPort, "the agents' HTTPS port (their metricsAddress)")
	f.StringVar(&o.agentCA, "agent-ca", "", "PEM file of the CA that signed the agents' and controller's certificates (default: not verified)")
	f.StringVar(&o.controller, "controller-address", "", "HOST:PORT of seine-controller's API (default: its pod's)")
	f.StringToStringVar(&o.agentAddrs, "agent-address", nil, "NODE=HOST:PORT where a node's agent is reached instead of its InternalIP (repeatable)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cs, dyn, err := c.kube.clients()
		if err != nil {
			return err
		}
		return supportBundleRun(cmd.Context(), cs, dyn, o, c.stdout, c.stderr)
	}
	return cmd
}

// supportBundleRun collects the bundle into o.dir and reports on stdout
// (the archive) and stderr (progress, what is missing).
func supportBundleRun(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, o supportBundleOptions, stdout, stderr io.Writer) error {
	client := supportbundle.DefaultClient()
	if o.agentCA != "" {
		pem, err := os.ReadFile(o.agentCA)
		if err != nil {
			return usageErr("supportbundle: --agent-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return usageErr("supportbundle: --agent-ca %s: no certificate", o.agentCA)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		t.TLSHandshakeTimeout = 0 // --timeout bounds each node
		client = &http.Client{Transport: t}
	}
	token, err := supportbundle.RequestToken(ctx, cs, o.namespace)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(o.dir, "seine-supportbundle-"+time.Now().UTC().Format("20060102T150405Z")+".tar.gz")
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	opts := supportbundle.Options{
		Kube: cs, Dynamic: dyn, Namespace: o.namespace, NodeSelector: o.selector, Since: o.since,
		Token: token, Client: client, AgentPort: o.agentPort, ControllerAddress: o.controller,
		AgentAddresses: o.agentAddrs,
		Parallel:       o.parallel, Timeout: o.timeout, Progress: stderr, ProgressInPlace: isTerminal(stderr),
	}
	res, err := supportbundle.Collect(ctx, out, opts)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("supportbundle: %w", err)
	}
	fi, _ := os.Stat(path)
	fmt.Fprintf(stdout, "wrote %s (%d bytes, %d nodes)\n", path, fi.Size(), len(res.Nodes))
	if err := res.Err(); err != nil {
		fmt.Fprintf(stderr, "missing from the bundle (see summary.txt in it):\n%v\n", err)
		return &exitError{code: 1, err: errors.New("the bundle is incomplete")}
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
