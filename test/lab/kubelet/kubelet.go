// Package kubelet is the lab's kubelet stand-in: what turns a network namespace into a
// Kubernetes node. It registers the Node and keeps it Ready (status and Lease), watches
// the pods bound to it, and for each one does what a kubelet plus container runtime do
// for the network, minus containers: a network namespace per pod, CNI ADD/DEL/CHECK
// through libcni, probe listeners standing in for the containers, and the pod status.
// See README.md for how it maps onto a real kubelet and runtime.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/test/lab/netns"
)

// Config describes one node.
type Config struct {
	NodeName string
	// NodeIP is the node's InternalIP, already configured in the node netns by the lab.
	NodeIP string
	// OS is the kubernetes.io/os label: "linux" or "windows" (a Linux netns may pose as a
	// Windows node).
	OS string
	// Labels are extra node labels.
	Labels map[string]string
	// Client is built by the caller from the node's kubeconfig (system:node:<name>).
	Client     kubernetes.Interface
	CNIBinDirs []string
	// CNIConfDir holds the network configuration: the first *.conf, *.conflist or *.json
	// in lexical order that parses, as a container runtime picks it.
	CNIConfDir string
	// CNIConfTemplate, when set, is a conflist text/template (fields .PodCIDR .PodCIDRs
	// .NodeName .NodeIP, function json) rendered into CNIConfDir once the Node has
	// spec.podCIDR: how a third-party plugin such as ptp+host-local gets the node's range.
	CNIConfTemplate string
	// NetNSDir is where pod namespaces are bind-mounted, as <NetNSDir>/<podUID>.
	NetNSDir string
	// StateDir holds the kubelet's per-pod records and libcni's cache.
	StateDir string
	Logger   *slog.Logger
	// NodeNetNS is the node's network namespace when the calling process is not inside it
	// (tests that run a node in-process): CNI plugins are then exec'd and hostNetwork
	// listeners opened from a thread in it. "" means the process's own namespace, which is
	// how the lab runs the kubelet.
	NodeNetNS string

	ops    sandboxOps // nil: real namespaces and probe listeners
	timing timing     // zero fields: defaults
}

// timing holds the intervals; tests shorten them.
type timing struct {
	configPoll   time.Duration // CNI config and podCIDR checks
	statusReport time.Duration // node status heartbeat when nothing changed
	leaseRenew   time.Duration
	retryBase    time.Duration // first pod retry delay, doubled up to retryMax
	retryMax     time.Duration
	opTimeout    time.Duration // one pod operation (CNI ADD/DEL with its status writes)
}

func (t timing) withDefaults() timing {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&t.configPoll, 2*time.Second)
	def(&t.statusReport, time.Minute)
	def(&t.leaseRenew, 10*time.Second)
	def(&t.retryBase, 500*time.Millisecond)
	def(&t.retryMax, 30*time.Second)
	def(&t.opTimeout, 2*time.Minute)
	return t
}

const (
	podWorkers   = 8
	uidIndex     = "uid"
	leaseSeconds = 40
)

type kubelet struct {
	cfg      Config
	log      *slog.Logger
	client   kubernetes.Interface
	cni      *libcni.CNIConfig
	ops      sandboxOps
	timing   timing
	state    *stateStore
	recorder record.EventRecorder
	pods     cache.Indexer
	queue    workqueue.TypedRateLimitingInterface[types.UID]

	mu        sync.Mutex
	sandboxes map[types.UID]*sandbox
	// listenCtx bounds every probe listener's life to Run.
	listenCtx context.Context
}

func newKubelet(cfg Config) (*kubelet, error) {
	var errs []error
	req := func(ok bool, what string) {
		if !ok {
			errs = append(errs, errors.New(what))
		}
	}
	req(cfg.NodeName != "", "NodeName is required")
	_, ipErr := netip.ParseAddr(cfg.NodeIP)
	req(ipErr == nil, fmt.Sprintf("NodeIP %q is not an IP address", cfg.NodeIP))
	req(cfg.OS == "linux" || cfg.OS == "windows", fmt.Sprintf("OS %q is neither linux nor windows", cfg.OS))
	req(cfg.Client != nil, "Client is required")
	req(len(cfg.CNIBinDirs) > 0, "CNIBinDirs is required")
	req(cfg.CNIConfDir != "", "CNIConfDir is required")
	req(cfg.NetNSDir != "", "NetNSDir is required")
	req(cfg.StateDir != "", "StateDir is required")
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ops := cfg.ops
	if ops == nil {
		ops = realOps{}
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &kubelet{
		cfg:       cfg,
		log:       log.With("node", cfg.NodeName),
		client:    cfg.Client,
		cni:       libcni.NewCNIConfigWithCacheDir(cfg.CNIBinDirs, st.cniCacheDir(), pluginExec(log)),
		ops:       ops,
		timing:    cfg.timing.withDefaults(),
		state:     st,
		sandboxes: map[types.UID]*sandbox{},
	}, nil
}

// Run runs the node until ctx is done. It expects to run inside the node's network
// namespace (or cfg.NodeNetNS). On return every probe listener is stopped while pod
// namespaces, CNI attachments and records stay: a later Run adopts them, Cleanup
// removes them.
func Run(ctx context.Context, cfg Config) error {
	k, err := newKubelet(cfg)
	if err != nil {
		return err
	}
	// client-go logs through klog's contextual logger: route it into ours.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(k.log.Handler()))
	if netns.PrivateMountNS() {
		k.log.Warn("running in a private mount namespace: pod netns mounts are invisible outside this process (start it with nsenter --net, not ip netns exec)")
	}
	if err := k.loadSandboxes(); err != nil {
		return err
	}

	// The broadcaster would stop by itself when ctx is done; operations still finishing
	// then may record events, so it stops when Run returns instead.
	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	k.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: cfg.NodeName}).
		WithLogger(klog.FromContext(ctx))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	k.listenCtx = runCtx

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		k.runNode(runCtx)
	}()

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	informer := factory.Core().V1().Pods().Informer()
	if err := informer.AddIndexers(cache.Indexers{uidIndex: indexByUID}); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	k.pods = informer.GetIndexer()
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](k.timing.retryBase, k.timing.retryMax),
		workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "pods"})
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueuePod,
		UpdateFunc: func(_, obj any) { k.enqueuePod(obj) },
		DeleteFunc: k.enqueuePod,
	}); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	factory.StartWithContext(runCtx)
	defer factory.Shutdown()

	if !cache.WaitForNamedCacheSyncWithContext(runCtx, informer.HasSynced) {
		cancel()
		k.queue.ShutDown()
		wg.Wait()
		return nil // ctx done before the first list
	}
	// Sandboxes from a previous run: adopt them or, if their pod is gone, tear them down.
	for _, uid := range k.sandboxUIDs() {
		k.queue.Add(uid)
	}
	for range podWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k.processNext(runCtx) {
			}
		}()
	}
	k.log.Info("kubelet running", "os", cfg.OS, "nodeIP", cfg.NodeIP)

	<-runCtx.Done()
	k.queue.ShutDown()
	wg.Wait()
	k.stopAllListeners()
	k.log.Info("kubelet stopped")
	return nil
}

func indexByUID(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	return []string{string(pod.UID)}, nil
}

func (k *kubelet) enqueuePod(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	// The field selector already filters on a real apiserver; fakes ignore it.
	if !ok || pod.Spec.NodeName != k.cfg.NodeName {
		return
	}
	k.queue.Add(pod.UID)
}

// podByUID returns the informer's pod with uid bound to this node, or nil.
func (k *kubelet) podByUID(uid types.UID) *corev1.Pod {
	objs, err := k.pods.ByIndex(uidIndex, string(uid))
	if err != nil {
		return nil
	}
	for _, o := range objs {
		if pod, ok := o.(*corev1.Pod); ok && pod.Spec.NodeName == k.cfg.NodeName {
			return pod
		}
	}
	return nil
}

// processNext handles one pod UID. The workqueue never hands the same UID to two workers
// at once, so operations on one pod are serialized.
func (k *kubelet) processNext(ctx context.Context) bool {
	uid, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(uid)
	if ctx.Err() != nil {
		return false // stopping: start nothing new
	}
	// An operation in flight finishes even when Run is stopping: a half-done CNI ADD
	// would only have to be undone by the next run.
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.timing.opTimeout)
	defer cancel()
	if err := k.syncPod(opCtx, uid); err != nil {
		k.log.Error("pod sync failed, will retry", "uid", uid, "attempt", k.queue.NumRequeues(uid)+1, "err", err)
		if ctx.Err() == nil {
			k.queue.AddRateLimited(uid)
		}
		return true
	}
	k.queue.Forget(uid)
	return true
}

// Check runs CNI CHECK for one running pod with the result cached at ADD, as a runtime
// does. A hostNetwork pod has nothing to check.
func Check(ctx context.Context, cfg Config, podUID string) error {
	k, err := newKubelet(cfg)
	if err != nil {
		return err
	}
	rec, err := k.state.load(types.UID(podUID))
	if err != nil {
		return fmt.Errorf("check pod %s: %w", podUID, err)
	}
	if rec.State != stateRunning {
		return fmt.Errorf("check pod %s: sandbox is %s, not running", podUID, rec.State)
	}
	if rec.HostNetwork {
		return nil
	}
	if err := k.cniCheck(ctx, rec); err != nil {
		return fmt.Errorf("check pod %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	return nil
}

// Cleanup tears down every sandbox recorded in cfg.StateDir (CNI DEL, namespace removal)
// without touching the API: for `lab down` and tests. It needs no Client.
func Cleanup(ctx context.Context, cfg Config) error {
	if cfg.Client == nil {
		cfg.Client = noClient{}
	}
	k, err := newKubelet(cfg)
	if err != nil {
		return err
	}
	if err := k.loadSandboxes(); err != nil {
		return err
	}
	var errs []error
	for _, uid := range k.sandboxUIDs() {
		if err := k.killPod(ctx, uid); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// noClient only satisfies Config validation for Cleanup, which makes no API calls.
type noClient struct{ kubernetes.Interface }
