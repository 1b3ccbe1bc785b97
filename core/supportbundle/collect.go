// Package supportbundle collects a cluster-wide Seine support bundle: from
// every selected node's seine-agent (its part, served on the agent's
// authenticated HTTPS API at bundle.Path), from seine-controller, and
// from the kube-apiserver (Seine's objects, the agents' and controller's
// pod logs, nodes), in parallel with a bound, into one gzipped tar. A node
// that does not answer within the timeout is reported in the archive and
// in the Result, and the rest is written all the same. See README.md.
package supportbundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/core/bundle"
)

// Defaults of Options.
const (
	DefaultAgentPort = 10351
	DefaultParallel  = 8
	DefaultTimeout   = 90 * time.Second
	// maxPartBytes bounds what one agent or the controller may send.
	maxPartBytes = 256 << 20
)

// Options say what to collect and how.
type Options struct {
	// Kube and Dynamic reach the kube-apiserver: nodes, pods and their
	// logs, ConfigMaps (Kube), Seine's custom resources (Dynamic).
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// Namespace is Seine's (seine.yml: kube-system).
	Namespace string
	// NodeSelector selects the nodes (a label selector; "" is all).
	NodeSelector string
	// Since limits logs to the latest ones; 0 is all the agents keep.
	Since time.Duration
	// Token is the bearer token agents and the controller get with each
	// request; they authorize it for get on bundle.Path through the
	// kube-apiserver (seine-supportbundle ClusterRole).
	Token string
	// Client makes the requests to agents and the controller (its TLS
	// configuration says whom it trusts); nil is DefaultClient.
	Client *http.Client
	// AgentAddress is where a node's agent serves (host:port); nil is
	// the node's InternalIP and AgentPort.
	AgentAddress func(*corev1.Node) (string, error)
	AgentPort    int
	// AgentAddresses, by node name, come before AgentAddress: agents
	// reached through a tunnel, a port-forward, the lab's relays.
	AgentAddresses map[string]string
	// ControllerAddress, when set (host:port), is where seine-controller
	// serves its API; its part of the bundle is collected there.
	ControllerAddress string
	// Parallel bounds the nodes collected at once; Timeout bounds each.
	Parallel int
	Timeout  time.Duration
	// Progress, when set, receives a progress line: rewritten in place
	// when ProgressInPlace (a terminal), one line per node otherwise.
	Progress        io.Writer
	ProgressInPlace bool
	Now             func() time.Time
}

// Result is what the collection found.
type Result struct {
	// Nodes are the selected nodes, by name, with what their agent gave.
	Nodes []NodeResult
	// Failed are the parts of the cluster (not of nodes) that failed.
	Failed []error
}

// NodeResult is one node's part.
type NodeResult struct {
	Node  string
	Bytes int
	Took  time.Duration
	// FailedSources are the files of the agent's part that failed (its
	// summary.txt's FAIL lines), when the part came.
	FailedSources []string
	// Err is why the agent's part is missing or partial, nil when it
	// came whole.
	Err error
}

// Err joins every failure of the collection, node by node.
func (r Result) Err() error {
	errs := slices.Clone(r.Failed)
	for _, n := range r.Nodes {
		if n.Err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Node, n.Err))
		}
	}
	return errors.Join(errs...)
}

// DefaultClient trusts any agent certificate: agents sign their own
// unless given one (metricsTLSCertFile), and the token it carries allows
// only bundle.Path. Give a Client with the agents' CA to verify them.
func DefaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = insecureTLS()
	// Options.Timeout bounds each node, handshake included.
	t.TLSHandshakeTimeout = 0
	return &http.Client{Transport: t}
}

// Collect writes the bundle to w. The error is about w or the node list;
// what could not be collected is in the Result and in the archive.
func Collect(ctx context.Context, w io.Writer, o Options) (Result, error) {
	o = o.withDefaults()
	nodes, err := o.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: o.NodeSelector})
	if err != nil {
		return Result{}, fmt.Errorf("list nodes: %w", err)
	}
	slices.SortFunc(nodes.Items, func(a, b corev1.Node) int { return cmpString(a.Name, b.Name) })
	ar := newArchive(w, o.Now())
	c := &collector{o: o, ar: ar}
	start := o.Now()

	res := Result{Nodes: make([]NodeResult, len(nodes.Items))}
	c.progress(0, len(nodes.Items), "")
	var (
		wg   sync.WaitGroup
		done int
		mu   sync.Mutex
	)
	sem := make(chan struct{}, o.Parallel)
	for i := range nodes.Items {
		n := &nodes.Items[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			nr := c.node(ctx, n)
			mu.Lock()
			res.Nodes[i] = nr
			done++
			c.progress(done, len(nodes.Items), nr.Node)
			mu.Unlock()
		}()
	}
	// The cluster's own parts while the nodes answer.
	res.Failed = c.cluster(ctx)
	wg.Wait()
	if o.Progress != nil && o.ProgressInPlace {
		fmt.Fprintln(o.Progress)
	}
	ar.add("summary.txt", summary(o, res, o.Now().Sub(start)))
	return res, ar.close()
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "kube-system"
	}
	if o.AgentPort == 0 {
		o.AgentPort = DefaultAgentPort
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Client == nil {
		o.Client = DefaultClient()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AgentAddress == nil {
		port := o.AgentPort
		o.AgentAddress = func(n *corev1.Node) (string, error) {
			if a, ok := o.AgentAddresses[n.Name]; ok {
				return a, nil
			}
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					return net.JoinHostPort(a.Address, strconv.Itoa(port)), nil
				}
			}
			return "", errors.New("the node has no InternalIP")
		}
	}
	return o
}

type collector struct {
	o  Options
	ar *archive
	mu sync.Mutex // progress
}

func (c *collector) progress(done, total int, node string) {
	if c.o.Progress == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.o.ProgressInPlace {
		fmt.Fprintf(c.o.Progress, "\rcollecting: %d/%d nodes%s", done, total, pad(node))
	} else if node != "" {
		fmt.Fprintf(c.o.Progress, "collected %d/%d nodes (%s)\n", done, total, node)
	}
}

func pad(node string) string {
	if node == "" {
		return "                              "
	}
	return fmt.Sprintf(", last %-20s", node)
}

// node collects one node's part: the agent's own (through its API), its
// SeineAgentInfo and its pod's log (through the kube-apiserver).
func (c *collector) node(ctx context.Context, n *corev1.Node) NodeResult {
	dir := "nodes/" + n.Name + "/"
	start := time.Now()
	r := NodeResult{Node: n.Name}
	if addr, err := c.o.AgentAddress(n); err != nil {
		r.Err = fmt.Errorf("seine-agent: %w", err)
	} else {
		actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
		r.Bytes, r.FailedSources, r.Err = c.fetch(actx, "https://"+addr+bundle.Path, dir)
		if r.Err != nil && actx.Err() != nil && ctx.Err() == nil {
			r.Err = fmt.Errorf("seine-agent at %s: no answer within %s: %w", addr, c.o.Timeout, r.Err)
		} else if r.Err != nil {
			r.Err = fmt.Errorf("seine-agent at %s: %w", addr, r.Err)
		}
		cancel()
	}
	r.Took = time.Since(start)
	if r.Err != nil {
		c.ar.add(dir+"ERROR.txt", fmt.Appendf(nil, "the node's part could not be collected (after %s): %v\n", r.Took.Round(time.Millisecond), r.Err))
	}
	// What the kube-apiserver knows of the node comes even when the agent
	// does not answer (that is when it matters most), with a time of its
	// own.
	kctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	c.ar.addSource(kctx, dir, agentInfo(c.o.Dynamic, n.Name))
	c.ar.addSource(kctx, dir, podLog("agent-pod.log", c.o.Kube, c.o.Namespace, "component=seine-agent", "seine-agent", n.Name, c.o.Since))
	return r
}

// fetch gets a part (a bundle.Write archive) and adds its files under dir;
// it returns the sources the part's summary says failed.
func (c *collector) fetch(ctx context.Context, url, dir string) (int, []string, error) {
	if c.o.Since > 0 {
		url += fmt.Sprintf("?%s=%d", bundle.SinceParam, int64(c.o.Since.Seconds()))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if c.o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.Token)
	}
	resp, err := c.o.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, nil, fmt.Errorf("%s: %s", resp.Status, trimLine(msg))
	}
	var failed []string
	counted := &countingReader{r: io.LimitReader(resp.Body, maxPartBytes)}
	err = bundle.Unpack(counted, func(name string, body []byte) error {
		if name == bundle.SummaryFile {
			failed = bundle.FailedSources(body)
		}
		c.ar.add(dir+cleanName(name), body)
		return nil
	})
	if err != nil {
		return counted.n, failed, fmt.Errorf("read: %w", err)
	}
	return counted.n, failed, nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// ServiceAccount is the identity a bundle is collected as (seine.yml: in
// Seine's namespace, bound to the seine-supportbundle ClusterRole, which
// allows get on bundle.Path and nothing else).
const ServiceAccount = "seine-supportbundle"

// TokenTTL is how long a collection's token lives: the TokenRequest
// API's minimum.
const TokenTTL = 10 * time.Minute

// RequestToken gets a short-lived token of ServiceAccount in namespace
// (TokenRequest): what the agents and the controller see, rather than the
// user's own credentials. The user needs create on serviceaccounts/token
// for it.
func RequestToken(ctx context.Context, cs kubernetes.Interface, namespace string) (string, error) {
	secs := int64(TokenTTL.Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, ServiceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of serviceaccount %s/%s: %w", namespace, ServiceAccount, err)
	}
	return tr.Status.Token, nil
}
