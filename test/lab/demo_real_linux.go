package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/images"
)

// The demo on real nodes (lab up --kubelet real, Seine installed from
// seine.yml) runs agnhost pods (`agnhost netexec`: HTTP on 8080, UDP on
// 8081, both answering "hostname" with the pod's name) and probes them
// only through the Kubernetes API, as a user would: `kubectl exec` into
// each pod runs curl and nc against the others, so every probe crosses the
// apiserver, the kubelet and containerd's exec path and then Seine's
// datapath.

// realDemoDeployment is the demo's Deployment of agnhost servers, spread
// over the nodes.
func realDemoDeployment(name, image string, replicas int32) *appsv1.Deployment {
	d := DemoDeployment(name, replicas)
	d.Spec.Template.Spec.Containers[0].Image = image
	d.Spec.Template.Spec.Containers[0].Args = []string{"netexec", "--http-port=8080", "--udp-port=8081"}
	d.Spec.Template.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1,
	}
	return d
}

// realDemo is Demo on real nodes: the pods' TCP and UDP reachability
// matrix, the demo Service by its cluster IP and by name (with the lab's
// cluster DNS), and a NetworkPolicy realized and enforced.
func realDemo(ctx context.Context, c *Config, w io.Writer, replicas int32) error {
	idx, err := images.ReadIndex(c.ImagesDir)
	if err != nil {
		return err
	}
	if idx.Names.Agnhost == "" {
		return fmt.Errorf("images in %s have no agnhost, which the demo's pods run (make lab and make images build it)", c.ImagesDir)
	}
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	const name = "lab-demo"
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, realDemoDeployment(name, idx.Names.Agnhost, replicas), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	pods, err := WaitDeploymentReady(ctx, cs, "default", name, 3*time.Minute)
	if err != nil {
		return err
	}
	if err := PrintNodes(ctx, cs, w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP\tREADY")
	for _, p := range pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", p.Name, p.Spec.NodeName, p.Status.PodIP, PodReady(&p))
	}
	tw.Flush()
	fmt.Fprintln(w)

	bad := 0
	for _, proto := range []string{"tcp", "udp"} {
		m, n, err := c.execMatrix(ctx, pods, proto)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s reachability through kubectl exec (row: from, column: to; . = answered with the right pod name):\n%s\n", strings.ToUpper(proto), m)
		bad += n
	}
	if bad > 0 {
		return fmt.Errorf("%d pod pairs could not reach each other", bad)
	}
	fmt.Fprintf(w, "all %d pods reach each other over TCP and UDP\n\n", len(pods))
	if err := c.demoService(ctx, cs, w, name, pods); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return c.realPolicyStep(ctx, cs, w, name, pods)
}

// probeTarget is one probe a pod runs: TCP asks agnhost's /hostname over
// HTTP, UDP sends "hostname" with nc.
type probeTarget struct{ proto, addr string }

func (t probeTarget) command() string {
	if t.proto == "udp" {
		host, port, _ := strings.Cut(t.addr, ":")
		return fmt.Sprintf("echo hostname | nc -u -w 1 %s %s 2>&1", host, port)
	}
	return fmt.Sprintf("curl -sS -m 2 http://%s/hostname 2>&1", t.addr)
}

// execProbes runs the probes from a pod in one `kubectl exec` and returns
// each one's answer (curl's or nc's error text when there was none).
func (c *Config) execProbes(ctx context.Context, from corev1.Pod, targets []probeTarget) ([]string, error) {
	var script strings.Builder
	for _, t := range targets {
		fmt.Fprintf(&script, "printf '%%s\\n' \"$(%s | head -c 200 | tr '\\n' ' ')\"\n", t.command())
	}
	out, err := c.Kubectl(ctx, "exec", "-n", from.Namespace, from.Name, "--", "sh", "-c", script.String())
	if err != nil {
		return nil, fmt.Errorf("kubectl exec %s: %w\n%s", from.Name, err, out)
	}
	lines := strings.Split(out, "\n")
	for len(lines) < len(targets) {
		lines = append(lines, "")
	}
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return lines[:len(targets)], nil
}

// execMatrix probes from every pod to every pod over proto (TCP 8080 or
// UDP 8081) through kubectl exec and renders the matrix: "." for the
// right pod name, "X" for no answer, "?" for another answer.
func (c *Config) execMatrix(ctx context.Context, pods []corev1.Pod, proto string) (string, int, error) {
	port := map[string]string{"tcp": "8080", "udp": "8081"}[proto]
	var targets []probeTarget
	for _, to := range pods {
		targets = append(targets, probeTarget{proto, to.Status.PodIP + ":" + port})
	}
	var b strings.Builder
	bad := 0
	fmt.Fprintf(&b, "%-4s", "")
	for j := range pods {
		fmt.Fprintf(&b, " %2d", j)
	}
	b.WriteString("\n")
	for i, from := range pods {
		answers, err := c.execProbes(ctx, from, targets)
		if err != nil {
			return "", 0, err
		}
		fmt.Fprintf(&b, "%-4d", i)
		for j, to := range pods {
			mark := "."
			switch {
			case answers[j] == "" || strings.Contains(answers[j], "curl:") || strings.Contains(answers[j], "nc:"):
				mark, bad = "X", bad+1
			case answers[j] != to.Name:
				mark, bad = "?", bad+1
			}
			fmt.Fprintf(&b, " %2s", mark)
		}
		b.WriteString("\n")
	}
	return b.String(), bad, nil
}

// demoService reaches the demo's Service from every pod by its cluster IP
// and, when the lab runs the cluster DNS (lab install-dns), by its name:
// each must be answered by one of the Service's pods (Seine's proxy
// load-balances; no kube-proxy runs).
func (c *Config) demoService(ctx context.Context, cs kubernetes.Interface, w io.Writer, name string, pods []corev1.Pod) error {
	svc, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	_, dnsErr := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	targets := []probeTarget{{"tcp", svc.Spec.ClusterIP + ":80"}}
	header := "FROM\tSERVICE " + name + " BY CLUSTER IP " + svc.Spec.ClusterIP
	if dnsErr == nil {
		targets = append(targets, probeTarget{"tcp", name + ":80"})
		header += "\tBY NAME " + name
	}
	members := map[string]bool{}
	for _, p := range pods {
		members[p.Name] = true
	}
	bad := 0
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, from := range pods {
		answers, err := c.execProbes(ctx, from, targets)
		if err != nil {
			return err
		}
		row := from.Name
		for _, a := range answers {
			if !members[a] {
				bad++
				a = "NOT ANSWERED (" + a + ")"
			} else {
				a = "answered by " + a
			}
			row += "\t" + a
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	if bad > 0 {
		return fmt.Errorf("the Service %s was not reached %d times", name, bad)
	}
	if dnsErr != nil {
		fmt.Fprintf(w, "every pod reaches the Service by its cluster IP (no cluster DNS in this lab: bin/lab install-dns)\n")
		return nil
	}
	fmt.Fprintf(w, "every pod reaches the Service by its cluster IP and by name\n")
	return nil
}

// realPolicyStep is the demo's NetworkPolicy on real nodes: pods[0]
// accepts the demo's pods on TCP 8080 only; once seine-controller reports
// it realized, TCP still answers and UDP is dropped (no answer, not a
// refusal) from every other pod; then the policy and the label go again.
func (c *Config) realPolicyStep(ctx context.Context, cs kubernetes.Interface, w io.Writer, app string, pods []corev1.Pod) (err error) {
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
	if err := cleanup(); err != nil {
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
	st, took, err := c.WaitPolicyRealized(ctx, np, time.Minute)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTROLPLANE POLICY\tSOURCE\tGENERATION\tDESIRED\tREALIZED\tPHASE")
	fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%d\t%d\t%s\n", st.Name, np.Namespace, np.Name, st.Status.Generation,
		st.Status.DesiredNodes, st.Status.RealizedNodes, st.Status.Phase)
	tw.Flush()
	fmt.Fprintf(w, "(realized %s after the policy was created; kubectl get networkpolicies.controlplane.seine.io shows the same)\n\n", took.Round(time.Millisecond))

	targets := []probeTarget{{"tcp", server.Status.PodIP + ":8080"}, {"udp", server.Status.PodIP + ":8081"}}
	bad := 0
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FROM\tTCP 8080 -> %s\tUDP 8081 -> %s\n", server.Name, server.Name)
	for _, from := range pods[1:] {
		answers, err := c.execProbes(ctx, from, targets)
		if err != nil {
			return err
		}
		tcpMark, udpMark := "answered", "dropped"
		if answers[0] != server.Name {
			tcpMark, bad = "NOT ANSWERED ("+answers[0]+")", bad+1
		}
		switch {
		case answers[1] == server.Name:
			udpMark, bad = "ANSWERED", bad+1
		case answers[1] != "": // denied must be dropped, not refused
			udpMark, bad = "NOT DROPPED ("+answers[1]+")", bad+1
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
