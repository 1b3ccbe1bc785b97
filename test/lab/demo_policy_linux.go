package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/client/clientset/versioned"
	"github.com/seine-cni/seine/test/lab/probe"
)

const (
	demoPolicy   = "lab-demo-tcp-only"
	demoRoleKey  = "seine.io/demo-role"
	demoRoleName = "server"
)

// demoPolicy is the demo's NetworkPolicy: the pod labelled as the server
// accepts the demo's pods on TCP 8080 only, so UDP 8081 is dropped.
func demoNetworkPolicy(app string) *networkingv1.NetworkPolicy {
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(8080)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: demoPolicy},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{demoRoleKey: demoRoleName}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
}

// demoNetworkPolicyStep is the NetworkPolicy part of the demo, on a lab
// running Seine: it makes pods[0] accept TCP 8080 only, waits until
// seine-controller reports the policy realized on every node of its span,
// shows that TCP still answers and UDP is dropped, and removes the policy
// and the label again.
func demoNetworkPolicyStep(ctx context.Context, c *Config, cs kubernetes.Interface, w io.Writer, app string, pods []corev1.Pod) (err error) {
	server := pods[0]
	patch := func(value any) error {
		b := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, demoRoleKey, value)
		_, err := cs.CoreV1().Pods(server.Namespace).Patch(ctx, server.Name, types.MergePatchType, []byte(b), metav1.PatchOptions{})
		return err
	}
	cleanup := func() error {
		errDel := cs.NetworkingV1().NetworkPolicies(server.Namespace).Delete(ctx, demoPolicy, metav1.DeleteOptions{})
		if apierrors.IsNotFound(errDel) {
			errDel = nil
		}
		return errors.Join(errDel, patch("null"))
	}
	if err := cleanup(); err != nil { // a demo interrupted before
		return fmt.Errorf("remove an earlier demo policy: %w", err)
	}
	defer func() { err = errors.Join(err, cleanup()) }()

	if err := patch(fmt.Sprintf("%q", demoRoleName)); err != nil {
		return fmt.Errorf("label the server pod: %w", err)
	}
	np, err := cs.NetworkingV1().NetworkPolicies(server.Namespace).Create(ctx, demoNetworkPolicy(app), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create network policy: %w", err)
	}
	fmt.Fprintf(w, "NetworkPolicy %s: %s (%s) accepts the demo's pods on TCP 8080 only\n\n", demoPolicy, server.Name, server.Spec.NodeName)

	st, took, err := c.WaitPolicyRealized(ctx, np, 30*time.Second)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTROLPLANE POLICY\tSOURCE\tGENERATION\tDESIRED\tREALIZED\tPHASE")
	fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%d\t%d\t%s\n", st.Name, np.Namespace, np.Name, st.Status.Generation,
		st.Status.DesiredNodes, st.Status.RealizedNodes, st.Status.Phase)
	tw.Flush()
	fmt.Fprintf(w, "(realized %s after the policy was created; kubectl get networkpolicies.controlplane.seine.io shows the same)\n\n", took.Round(time.Millisecond))

	bad := 0
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FROM\tTCP 8080 -> %s\tUDP 8081 -> %s\n", server.Name, server.Name)
	for _, from := range pods[1:] {
		ns, err := c.PodNetNS(&from)
		if err != nil {
			return err
		}
		tcp, tcpErr := probe.Probe(ctx, ns, "tcp", server.Status.PodIP+":8080", 2*time.Second)
		_, udpErr := probe.Probe(ctx, ns, "udp", server.Status.PodIP+":8081", time.Second)
		tcpMark, udpMark := "answered", "dropped"
		if tcpErr != nil || strings.TrimSpace(tcp) != server.Name {
			tcpMark, bad = "NOT ANSWERED", bad+1
		}
		switch {
		case udpErr == nil:
			udpMark, bad = "ANSWERED", bad+1
		case !errors.Is(udpErr, probe.ErrTimeout): // denied must be dropped, not refused
			udpMark, bad = "REFUSED: "+udpErr.Error(), bad+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", from.Name, tcpMark, udpMark)
	}
	tw.Flush()
	if bad > 0 {
		return fmt.Errorf("the network policy is not enforced as written (%d wrong probes)", bad)
	}
	fmt.Fprintf(w, "the policy is enforced: TCP answers, UDP is dropped (removing it again)\n")
	return nil
}

// WaitPolicyRealized reads np's internal policy through the kube-apiserver
// (API aggregation, as kubectl does) until seine-controller reports it
// realized at np's generation on every node of its span.
func (c *Config) WaitPolicyRealized(ctx context.Context, np *networkingv1.NetworkPolicy, timeout time.Duration) (*cp.NetworkPolicy, time.Duration, error) {
	rc, err := c.RESTConfig("admin")
	if err != nil {
		return nil, 0, err
	}
	cpcs, err := versioned.NewForConfig(rc)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	last := "not computed yet"
	for time.Since(start) < timeout {
		// The internal policy is named after the user policy's UID.
		p, err := cpcs.ControlplaneV1beta1().NetworkPolicies().Get(ctx, string(np.UID), metav1.GetOptions{})
		switch {
		case err != nil:
			last = err.Error()
		case p.Status != nil:
			s := p.Status
			last = fmt.Sprintf("generation %d, %d of %d nodes realized, %s", s.Generation, s.RealizedNodes, s.DesiredNodes, s.Phase)
			if s.Generation == np.Generation && s.Phase == cp.PolicyRealized && s.DesiredNodes > 0 {
				return p, time.Since(start), nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, 0, fmt.Errorf("network policy %s not realized after %s: %s", np.Name, timeout, last)
}
