package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/traceflow"
)

// traceflowOptions are seinectl traceflow's flags.
type traceflowOptions struct {
	source, destination, namespace, protocol string
	srcPort, dstPort, timeout                int
	live, droppedOnly, keep                  bool
	output                                   string
}

func (c *cli) traceflowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "traceflow -S NS/POD -D NS/POD|NS/SERVICE|IP [flags]",
		Aliases: []string{"tf"},
		Short:   "Trace a packet through the cluster's switches",
		Long: `Creates a Traceflow (crd.seine.io), waits for its verdict, prints the path
hop by hop (-o json|yaml: the Traceflow object) and deletes it (--keep
leaves it). Exit status 1 when the trace failed (no verdict: timeout, bad
input). A source or destination without a namespace is in -n's namespace
(default: the kubeconfig context's). A destination NS/NAME is a pod if one
has that name, else a Service. Injected packets default to --dport 80 (a
Service: its first port of the protocol); --live traces the next new
connection that matches.`,
		Example: `  seinectl traceflow -S default/web-0 -D prod/db-0 -p tcp --dport 5432
  seinectl traceflow -S default/web-0 -D default/web --live
  seinectl traceflow -D prod/db-0 --live --dropped-only -t 120`,
		Args: noArgs,
	}
	var o traceflowOptions
	f := cmd.Flags()
	f.StringVarP(&o.source, "source", "S", "", "the source pod (NS/POD or POD); for --live an IPv4 address, or nothing (any source)")
	f.StringVarP(&o.destination, "destination", "D", "", "a pod or a Service (NS/NAME), or an IPv4 address; for --live it may be left out")
	f.StringVarP(&o.protocol, "protocol", "p", "", "tcp (default), udp or icmp; for --live empty is any")
	f.IntVarP(&o.timeout, "timeout", "t", crd.DefaultTimeout, fmt.Sprintf("seconds, %d-%d", crd.MinTimeout, crd.MaxTimeout))
	f.IntVar(&o.srcPort, "sport", 0, "source port")
	f.IntVar(&o.dstPort, "dport", 0, "destination port")
	f.BoolVar(&o.live, "live", false, "trace live traffic: the next new connection that matches")
	f.BoolVar(&o.droppedOnly, "dropped-only", false, "with --live: wait for a matching packet that is dropped")
	f.BoolVar(&o.keep, "keep", false, "keep the Traceflow afterwards")
	out := outputFlag(cmd, formatTable)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(*out, true); err != nil {
			return err
		}
		o.output = *out
		ns, err := c.kube.namespace()
		if err != nil {
			return err
		}
		o.namespace = ns
		kube, dyn, err := c.kube.clients()
		if err != nil {
			return err
		}
		return traceflowRun(cmd.Context(), dyn, kube, o, c.stdout, 100*time.Millisecond)
	}
	return cmd
}

// traceflowSpec builds the Traceflow's spec from the flags; a destination
// NS/NAME is a pod if one has that name, else a Service.
func traceflowSpec(ctx context.Context, kube kubernetes.Interface, o traceflowOptions) (crd.TraceflowSpec, error) {
	s := crd.TraceflowSpec{LiveTraffic: o.live, DroppedOnly: o.droppedOnly, Timeout: int32(o.timeout),
		Packet: crd.Packet{Protocol: strings.ToUpper(o.protocol), SrcPort: int32(o.srcPort), DstPort: int32(o.dstPort)}}
	if o.timeout < crd.MinTimeout || o.timeout > crd.MaxTimeout {
		return s, usageErr("traceflow: timeout %d s out of range %d-%d", o.timeout, crd.MinTimeout, crd.MaxTimeout)
	}
	split := func(ref string) (string, string) {
		if ns, name, ok := strings.Cut(ref, "/"); ok {
			return ns, name
		}
		if o.namespace == "" {
			return "default", ref
		}
		return o.namespace, ref
	}
	switch _, err := netip.ParseAddr(o.source); {
	case o.source == "":
	case err == nil:
		s.Source.IP = o.source
	default:
		s.Source.Namespace, s.Source.Pod = split(o.source)
	}
	switch _, err := netip.ParseAddr(o.destination); {
	case o.destination == "":
	case err == nil:
		s.Destination.IP = o.destination
	default:
		ns, name := split(o.destination)
		s.Destination.Namespace = ns
		_, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			s.Destination.Pod = name
		case !apierrors.IsNotFound(err):
			return s, fmt.Errorf("destination pod %s/%s: %w", ns, name, err)
		default:
			if _, err := kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				if apierrors.IsNotFound(err) {
					return s, fmt.Errorf("destination %s/%s: no pod or service of that name", ns, name)
				}
				return s, fmt.Errorf("destination service %s/%s: %w", ns, name, err)
			}
			s.Destination.Service = name
		}
	}
	if err := traceflow.Validate(s); err != nil {
		return s, &exitError{code: 2, err: err}
	}
	return s, nil
}

// traceflowRun creates the Traceflow, polls it every poll until it ends,
// prints it and deletes it (unless o.keep).
func traceflowRun(ctx context.Context, dyn dynamic.Interface, kube kubernetes.Interface, o traceflowOptions, stdout io.Writer, poll time.Duration) error {
	spec, err := traceflowSpec(ctx, kube, o)
	if err != nil {
		return err
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&crd.Traceflow{
		TypeMeta:   metav1.TypeMeta{APIVersion: crd.SchemeGroupVersion.String(), Kind: "Traceflow"},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("seinectl-%08x", rand.Uint32())}, Spec: spec})
	if err != nil {
		return err
	}
	delete(obj, "status")
	res := dyn.Resource(crd.TraceflowsResource)
	created, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create traceflow: %w", err)
	}
	name := created.GetName()
	if !o.keep {
		defer func() {
			// Even after ^C: a fresh context, bounded.
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = res.Delete(dctx, name, metav1.DeleteOptions{})
		}()
	}
	// The controller fails it at its timeout; allow it a little more.
	deadline := time.Now().Add(time.Duration(spec.Timeout)*time.Second + 10*time.Second)
	var tf crd.Traceflow
	for {
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("traceflow %s: %w", name, err)
		}
		tf = crd.Traceflow{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tf); err != nil {
			return fmt.Errorf("traceflow %s: %w", name, err)
		}
		if tf.Status.Phase == crd.Succeeded || tf.Status.Phase == crd.Failed {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("traceflow %s still %q after %s: is seine-controller running?", name, tf.Status.Phase, time.Duration(spec.Timeout)*time.Second+10*time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("traceflow %s: %w", name, ctx.Err())
		case <-time.After(poll):
		}
	}
	switch o.output {
	case formatJSON, formatYAML:
		tf.TypeMeta = metav1.TypeMeta{APIVersion: crd.SchemeGroupVersion.String(), Kind: "Traceflow"}
		err = printStructured(stdout, o.output, &tf)
	default:
		err = traceflow.Render(stdout, &tf)
	}
	if err != nil {
		return err
	}
	if tf.Status.Phase == crd.Failed {
		return &exitError{code: 1, err: errors.New(traceflow.Verdict(&tf))}
	}
	return nil
}
