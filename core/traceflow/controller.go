package traceflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Controller is seine-controller's side of Traceflow: it validates and
// resolves new Traceflows, tags them, declares the verdict once a node
// reports one, and fails them at their timeout. See README.md.
type Controller struct {
	dyn   dynamic.Interface
	kube  kubernetes.Interface
	log   *slog.Logger
	tags  Tags
	inf   cache.SharedIndexInformer
	queue workqueue.TypedRateLimitingInterface[string]
	now   func() time.Time
	// apply writes the controller's part of a status (applyStatus; tests
	// record it instead).
	apply func(ctx context.Context, name string, st *crd.TraceflowStatus) error
}

// NewController makes the controller; Run starts it.
func NewController(dyn dynamic.Interface, kube kubernetes.Interface, log *slog.Logger) *Controller {
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	c := &Controller{dyn: dyn, kube: kube, log: log, now: time.Now,
		inf:   f.ForResource(crd.TraceflowsResource).Informer(),
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	c.apply = func(ctx context.Context, name string, st *crd.TraceflowStatus) error {
		return applyStatus(ctx, dyn, name, ControllerManager, st)
	}
	enqueue := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(k)
		}
	}
	c.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	return c
}

// Run processes Traceflows until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	go c.inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.inf.HasSynced) {
		return ctx.Err()
	}
	c.claimRunning()
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for {
		key, quit := c.queue.Get()
		if quit {
			return nil
		}
		err := c.sync(ctx, key)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("traceflow sync", "traceflow", key, "err", err)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}

// claimRunning takes the tags of the running Traceflows (after a restart)
// before any new one is tagged.
func (c *Controller) claimRunning() {
	// Tags of running Traceflows survive a restart: claim them before
	// any new one is tagged.
	for _, obj := range c.inf.GetStore().List() {
		tf, err := fromUnstructured(obj)
		if err == nil && tf.Status.Phase == crd.Running && tf.Status.DataplaneTag > 0 {
			if err := c.tags.Claim(tf.Name, uint8(tf.Status.DataplaneTag)); err != nil {
				c.log.Warn("running traceflow's tag", "traceflow", tf.Name, "err", err)
			}
		}
	}
}

// Running is the number of tags held (the Traceflows running).
func (c *Controller) Running() int { return c.tags.InUse() }

func (c *Controller) sync(ctx context.Context, name string) error {
	obj, exists, err := c.inf.GetStore().GetByKey(name)
	if err != nil {
		return err
	}
	if !exists {
		c.tags.Release(name)
		return nil
	}
	tf, err := fromUnstructured(obj)
	if err != nil {
		return err
	}
	st := tf.Status
	st.Results = nil // the agents' fields
	now := c.now()
	switch tf.Status.Phase {
	case "", crd.Pending:
		if err := Validate(tf.Spec); err != nil {
			return c.finish(ctx, tf, st, crd.Failed, err.Error())
		}
		deadline := tf.CreationTimestamp.Add(Timeout(tf.Spec))
		if !now.Before(deadline) {
			return c.finish(ctx, tf, st, crd.Failed, fmt.Sprintf("timed out after %s waiting for a data-plane tag", Timeout(tf.Spec)))
		}
		r, err := c.resolve(ctx, tf.Spec)
		if err != nil {
			return c.finish(ctx, tf, st, crd.Failed, err.Error())
		}
		tag, err := c.tags.Allocate(tf.Name)
		if errors.Is(err, ErrNoTag) {
			st.Phase, st.Reason = crd.Pending, "waiting for a data-plane tag: "+err.Error()
			c.queue.AddAfter(name, time.Second)
			if tf.Status.Phase == crd.Pending {
				return nil
			}
			return c.apply(ctx, name, &st)
		}
		start := metav1.NewTime(now)
		st = crd.TraceflowStatus{Phase: crd.Running, StartTime: &start, DataplaneTag: int32(tag),
			SourceNode: r.sourceNode, Nodes: r.nodes, SrcIP: addrString(r.srcIP), DstIP: addrString(r.dstIP), DstPort: r.dstPort}
		if err := c.apply(ctx, name, &st); err != nil {
			c.tags.Release(name)
			return err
		}
		c.log.Info("traceflow running", "traceflow", name, "tag", tag, "source", r.sourceNode, "nodes", r.nodes)
		c.queue.AddAfter(name, Timeout(tf.Spec))
		return nil
	case crd.Running:
		if tf.Status.DataplaneTag > 0 {
			_ = c.tags.Claim(tf.Name, uint8(tf.Status.DataplaneTag))
		}
		if Ended(tf.Spec, tf.Status) {
			return c.finish(ctx, tf, st, crd.Succeeded, "")
		}
		start := tf.CreationTimestamp.Time
		if tf.Status.StartTime != nil {
			start = tf.Status.StartTime.Time
		}
		deadline := start.Add(Timeout(tf.Spec))
		if !now.Before(deadline) {
			if HasVerdict(tf.Status.Results) {
				// The source node's report never came: the verdict stands.
				return c.finish(ctx, tf, st, crd.Succeeded, "")
			}
			return c.finish(ctx, tf, st, crd.Failed, TimeoutReason(tf.Spec, tf.Status, Timeout(tf.Spec)))
		}
		c.queue.AddAfter(name, deadline.Sub(now))
		return nil
	default:
		c.tags.Release(name)
		return nil
	}
}

// finish writes the verdict and frees the tag.
func (c *Controller) finish(ctx context.Context, tf *crd.Traceflow, st crd.TraceflowStatus, phase crd.Phase, reason string) error {
	st.Phase, st.Reason = phase, reason
	if err := c.apply(ctx, tf.Name, &st); err != nil {
		return err
	}
	c.tags.Release(tf.Name)
	c.log.Info("traceflow done", "traceflow", tf.Name, "phase", phase, "reason", reason)
	return nil
}

// resolved is a Traceflow's packet and path as the controller found them.
type resolved struct {
	sourceNode   string
	nodes        []string
	srcIP, dstIP netip.Addr
	dstPort      int32
}

func (c *Controller) resolve(ctx context.Context, s crd.TraceflowSpec) (resolved, error) {
	var r resolved
	add := func(n string) {
		if n != "" && !slices.Contains(r.nodes, n) {
			r.nodes = append(r.nodes, n)
		}
	}
	switch {
	case s.Source.Pod != "":
		src, err := c.kube.CoreV1().Pods(s.Source.Namespace).Get(ctx, s.Source.Pod, metav1.GetOptions{})
		if err != nil {
			return r, fmt.Errorf("source pod %s/%s: %w", s.Source.Namespace, s.Source.Pod, err)
		}
		if r.srcIP, err = podIP(src); err != nil {
			return r, fmt.Errorf("source %w", err)
		}
		r.sourceNode = src.Spec.NodeName
		add(r.sourceNode)
	case s.Source.IP != "":
		r.srcIP = netip.MustParseAddr(s.Source.IP) // Validate checked it
	}
	d := s.Destination
	proto, _ := Protocol(s.Packet.Protocol)
	if s.LiveTraffic {
		proto, _ = LiveProtocol(s.Packet.Protocol)
	}
	if proto != ProtoICMP {
		r.dstPort = s.Packet.DstPort
	}
	switch {
	case d.Pod == "" && d.Service == "" && d.IP == "": // live traffic to anywhere
		nodes, err := c.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return r, fmt.Errorf("nodes (a live trace without a destination waits for every node): %w", err)
		}
		for _, n := range nodes.Items {
			add(n.Name)
		}
	case d.Pod != "":
		dst, err := c.kube.CoreV1().Pods(d.Namespace).Get(ctx, d.Pod, metav1.GetOptions{})
		if err != nil {
			return r, fmt.Errorf("destination pod %s/%s: %w", d.Namespace, d.Pod, err)
		}
		if r.dstIP, err = podIP(dst); err != nil {
			return r, fmt.Errorf("destination %w", err)
		}
		add(dst.Spec.NodeName)
		if r.sourceNode == "" {
			r.sourceNode = dst.Spec.NodeName // live traffic: tagged where it arrives
		}
	case d.Service != "":
		svc, err := c.kube.CoreV1().Services(d.Namespace).Get(ctx, d.Service, metav1.GetOptions{})
		if err != nil {
			return r, fmt.Errorf("destination service %s/%s: %w", d.Namespace, d.Service, err)
		}
		if r.dstIP, err = netip.ParseAddr(svc.Spec.ClusterIP); err != nil || !r.dstIP.Is4() {
			return r, fmt.Errorf("destination service %s/%s has no IPv4 cluster IP (%q)", d.Namespace, d.Service, svc.Spec.ClusterIP)
		}
		if r.dstPort == 0 && proto != ProtoICMP && !s.LiveTraffic {
			want := map[uint8]corev1.Protocol{ProtoTCP: corev1.ProtocolTCP, ProtoUDP: corev1.ProtocolUDP}[proto]
			for _, p := range svc.Spec.Ports {
				if p.Protocol == want {
					r.dstPort = p.Port
					break
				}
			}
			if r.dstPort == 0 {
				return r, fmt.Errorf("destination service %s/%s has no %s port", d.Namespace, d.Service, want)
			}
		}
		slices, err := c.kube.DiscoveryV1().EndpointSlices(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + d.Service})
		if err != nil {
			return r, fmt.Errorf("endpoints of service %s/%s: %w", d.Namespace, d.Service, err)
		}
		for _, sl := range slices.Items {
			for _, ep := range sl.Endpoints {
				if ep.NodeName != nil {
					add(*ep.NodeName)
				}
			}
		}
	default:
		r.dstIP = netip.MustParseAddr(d.IP) // Validate checked it
		pods, err := c.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + d.IP})
		if err != nil && !apierrors.IsBadRequest(err) {
			return r, fmt.Errorf("pods with IP %s: %w", d.IP, err)
		}
		if err == nil {
			for _, p := range pods.Items {
				if a, err := podIP(&p); err == nil && a == r.dstIP {
					add(p.Spec.NodeName)
				}
			}
		}
	}
	if r.dstPort == 0 && proto != ProtoICMP && !s.LiveTraffic {
		r.dstPort = 80
	}
	return r, nil
}

func podIP(p *corev1.Pod) (netip.Addr, error) {
	if p.Spec.HostNetwork {
		return netip.Addr{}, fmt.Errorf("pod %s/%s uses the host's network: it has no OVS port to trace", p.Namespace, p.Name)
	}
	if p.Spec.NodeName == "" {
		return netip.Addr{}, fmt.Errorf("pod %s/%s is not scheduled", p.Namespace, p.Name)
	}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is4() {
			return a, nil
		}
	}
	if a, err := netip.ParseAddr(p.Status.PodIP); err == nil && a.Is4() {
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("pod %s/%s has no IPv4 address yet", p.Namespace, p.Name)
}

// addrString is a's text, "" when a is not set (a live trace's any).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
