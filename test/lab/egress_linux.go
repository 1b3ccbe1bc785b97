package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab/netns"
)

// kube-apiserver reaches kubelets (exec, logs, port-forward), pods (the
// proxy subresources) and aggregated API servers the way a control plane
// outside the cluster network does: through an egress selector. Its
// "cluster" egress is HTTP CONNECT over a unix socket (EgressSocket) to the
// lab's egress proxy, which dials each destination from where a node would:
//
//   - a node's address or name: from inside that node's network namespace
//     (the kubelet listens there; in the bridged-uplink topology the node IP
//     lives on the OVS bridge, and the node reaches its own address whatever
//     the fabric does);
//   - a pod IP: from inside the namespace of the node whose podCIDR holds it
//     (node to local pod, which every CNI and NetworkPolicy allows);
//   - anything else (seine-controller's address in a stand-in lab): from
//     the machine's namespace, where the apiserver itself runs.
//
// Nothing is added to the machine's network for it: the apiserver stays on
// loopback, the node and pod addresses stay in their namespaces.

// EgressSocket is the unix socket of the lab's egress proxy.
func (c *Config) EgressSocket() string { return c.path("egress.sock") }

func (c *Config) egressSelectorConfigPath() string { return c.path("egress-selector.yaml") }

// egressSelectorConfig is kube-apiserver's EgressSelectorConfiguration.
func (c *Config) egressSelectorConfig() string {
	return fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, c.EgressSocket())
}

// egressRoute decides the network namespace a destination is dialled from.
type egressRoute struct {
	c      *Config
	cs     kubernetes.Interface
	byHost map[string]string // node IP or name -> namespace path

	mu      sync.Mutex
	cidrs   map[netip.Prefix]string // podCIDR -> namespace path
	listed  time.Time
	listErr error
}

func newEgressRoute(c *Config, cs kubernetes.Interface) *egressRoute {
	r := &egressRoute{c: c, cs: cs, byHost: map[string]string{}, cidrs: map[netip.Prefix]string{}}
	for _, n := range c.NodeList() {
		r.byHost[n.IP] = c.NetNSPath(n.Name)
		r.byHost[n.Name] = c.NetNSPath(n.Name)
	}
	return r
}

// netNS returns the namespace path to dial host from; "" is the machine's.
func (r *egressRoute) netNS(ctx context.Context, host string) string {
	if ns, ok := r.byHost[host]; ok {
		return ns
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ns := r.podCIDRNetNS(ip); ns != "" {
		return ns
	}
	// A podCIDR allocated since the last look: read the nodes again, at
	// most once a second.
	if time.Since(r.listed) > time.Second {
		r.listNodes(ctx)
	}
	return r.podCIDRNetNS(ip)
}

func (r *egressRoute) podCIDRNetNS(ip netip.Addr) string {
	for p, ns := range r.cidrs {
		if p.Contains(ip) {
			return ns
		}
	}
	return ""
}

func (r *egressRoute) listNodes(ctx context.Context) {
	r.listed = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := r.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if r.listErr = err; err != nil {
		return
	}
	for _, n := range nodes.Items {
		ns, ok := r.byHost[n.Name]
		if !ok {
			continue
		}
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if p, err := netip.ParsePrefix(s); err == nil {
				r.cidrs[p.Masked()] = ns
			}
		}
	}
}

// ServeEgress serves HTTP CONNECT on the unix socket sock until ctx ends,
// dialling each destination from the namespace route names ("" for the
// machine's own).
func ServeEgress(ctx context.Context, log *slog.Logger, sock string, route func(ctx context.Context, host string) string) error {
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           egressHandler(ctx, log, route),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("egress proxy serving", "socket", sock)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func egressHandler(ctx context.Context, log *slog.Logger, route func(ctx context.Context, host string) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "the lab's egress proxy only tunnels (CONNECT host:port)", http.StatusMethodNotAllowed)
			return
		}
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			http.Error(w, "CONNECT "+r.Host+": "+err.Error(), http.StatusBadRequest)
			return
		}
		ns := route(r.Context(), host)
		out, err := dialIn(r.Context(), ns, r.Host)
		if err != nil {
			log.Warn("egress dial", "target", r.Host, "netns", ns, "err", err)
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			out.Close()
			http.Error(w, "cannot tunnel", http.StatusInternalServerError)
			return
		}
		in, buf, err := hj.Hijack()
		if err != nil {
			out.Close()
			return
		}
		if _, err := io.WriteString(in, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			in.Close()
			out.Close()
			return
		}
		go tunnel(ctx, in, buf.Reader, out)
	})
}

// dialIn connects to addr from inside the network namespace at nsPath (the
// machine's own when ""). The socket stays in the namespace it was made in.
func dialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	var conn net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil && nsPath != "" {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, nsPath, err)
	}
	return conn, err
}

// tunnel copies both ways until both sides are done; what the client sent
// after its CONNECT request and the proxy read ahead (buffered) goes first.
func tunnel(ctx context.Context, in net.Conn, buffered *bufio.Reader, out net.Conn) {
	defer in.Close()
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(out, buffered)
		if tc, ok := out.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(in, out)
		if uc, ok := in.(interface{ CloseWrite() error }); ok {
			uc.CloseWrite()
		}
		done <- struct{}{}
	}()
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}

// ServeProxies runs the lab's two proxies in one process until ctx ends:
// the apiserver inside every node namespace (ServeAPIProxy) and the
// apiserver's egress into the nodes (ServeEgress).
func ServeProxies(ctx context.Context, log *slog.Logger, c *Config, target string, listens []ProxyListen) error {
	cs, err := c.Client("admin")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	route := newEgressRoute(c, cs)
	egress := make(chan error, 1)
	go func() {
		egress <- ServeEgress(ctx, log, c.EgressSocket(), route.netNS)
		cancel()
	}()
	err = ServeAPIProxy(ctx, log, target, listens)
	cancel()
	return errors.Join(err, <-egress)
}

// kubeletAPIRBAC lets kube-apiserver's kubelet client (kubeletClientUser)
// use every kubelet's API: the kubelets authorize it with a
// SubjectAccessReview (webhook mode), answered by this binding to the
// built-in system:kubelet-api-admin role.
func kubeletAPIRBAC(ctx context.Context, cs kubernetes.Interface) error {
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "lab:" + kubeletClientUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: kubeletClientUser}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubelet API binding: %w", err)
	}
	return nil
}
