package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// Prometheus is a real Prometheus server (Debian's prometheus package)
// scraping the lab's seine-controller and every node's seine-agent over
// HTTPS, authorized through the kube-apiserver. Agents serve /metrics on
// 127.0.0.1:AgentMetricsPort inside their node's namespace; a relay in the
// machine's namespace reaches each one there (as ServeAPIProxy does the
// other way).
type Prometheus struct {
	// URL is the server's HTTP API (http://127.0.0.1:port).
	URL string
	// Agents maps a node to the relay address Prometheus scrapes it at.
	Agents map[string]string
	cmd    *exec.Cmd
	exited <-chan error // Wait's result
	relays *AgentRelays
}

// ScrapeInterval is how often the lab's Prometheus scrapes.
const ScrapeInterval = time.Second

// StartPrometheus starts Prometheus with its data in dir; Stop ends it.
// It does not touch the machine's prometheus service.
func (c *Config) StartPrometheus(ctx context.Context, log *slog.Logger, dir string) (*Prometheus, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, fmt.Errorf("prometheus (Debian package prometheus; go tool mage deps installs it): %w", err)
	}
	kc, err := clientcmd.LoadFromFile(c.KubeconfigPath("prometheus"))
	if err != nil {
		return nil, fmt.Errorf("prometheus identity: %w", err)
	}
	var token string
	for _, a := range kc.AuthInfos {
		token = a.Token
	}
	if token == "" {
		return nil, errors.New("prometheus identity: no token in its kubeconfig")
	}
	p := &Prometheus{}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	if p.relays, err = c.StartAgentRelays(log); err != nil {
		return nil, err
	}
	p.Agents = p.relays.Addrs
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p.URL = "http://127.0.0.1:" + port
	files := map[string]string{
		"token":          token,
		"prometheus.yml": c.prometheusConfig(p.Agents, filepath.Join(dir, "token")),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:"+port,
		"--storage.tsdb.retention.time=1h", "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	p.exited = exited
	if err := waitReady(ctx, p.URL+"/-/ready", exited, 60*time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
		return nil, fmt.Errorf("prometheus: %w\nits log:\n%s", err, b)
	}
	ok = true
	return p, nil
}

// prometheusConfig scrapes the controller with the lab CA and
// Prometheus' token, and every agent through its relay.
func (c *Config) prometheusConfig(agents map[string]string, tokenFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global:
  scrape_interval: %s
  scrape_timeout: %s
scrape_configs:
- job_name: seine-controller
  scheme: https
  authorization:
    credentials_file: %s
  tls_config:
    ca_file: %s
  static_configs:
  - targets: ['%s']
- job_name: seine-agent
  scheme: https
  authorization:
    credentials_file: %s
  tls_config:
    # Each agent signs its own serving certificate (no metricsTLSCertFile
    # in the lab): the token is still checked, the server is not.
    insecure_skip_verify: true
  static_configs:
`, ScrapeInterval, ScrapeInterval, tokenFile, c.pki("ca.crt"), strings.TrimPrefix(c.ControllerURL(), "https://"), tokenFile)
	for _, n := range c.NodeList() {
		fmt.Fprintf(&b, "  - targets: ['%s']\n    labels: {node: '%s'}\n", agents[n.Name], n.Name)
	}
	return b.String()
}

// Stop ends Prometheus and the relays.
func (p *Prometheus) Stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		if p.exited != nil {
			<-p.exited
		} else {
			p.cmd.Wait()
		}
		p.cmd = nil
	}
	if p.relays != nil {
		p.relays.Stop()
		p.relays = nil
	}
}

// waitReady polls url until it answers 200, the process exits or timeout
// passes.
func waitReady(ctx context.Context, url string, exited <-chan error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready at %s after %s: %s", url, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}
