package lab

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/seine-cni/seine/test/lab/netns"
)

// AgentRelays reach every node's seine-agent API (HTTPS on
// 127.0.0.1:AgentMetricsPort inside the node's namespace, where lab agents
// serve /metrics and /supportbundle) from the machine's namespace: one
// listener on 127.0.0.1 per node.
type AgentRelays struct {
	// Addrs maps a node to its relay's address.
	Addrs map[string]string
	lns   []net.Listener
	wg    sync.WaitGroup
}

// StartAgentRelays starts a relay per node; Stop ends them.
func (c *Config) StartAgentRelays(log *slog.Logger) (*AgentRelays, error) {
	r := &AgentRelays{Addrs: map[string]string{}}
	for _, n := range c.NodeList() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			r.Stop()
			return nil, err
		}
		r.lns = append(r.lns, ln)
		r.Addrs[n.Name] = ln.Addr().String()
		r.wg.Add(1)
		go r.relay(log, ln, c.NetNSPath(n.Name), net.JoinHostPort("127.0.0.1", strconv.Itoa(AgentMetricsPort)))
	}
	return r, nil
}

// relay accepts on ln and connects each connection to target inside the
// network namespace nsPath.
func (r *AgentRelays) relay(log *slog.Logger, ln net.Listener, nsPath, target string) {
	defer r.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			var up net.Conn
			err := netns.Do(nsPath, func() error {
				var err error
				up, err = net.DialTimeout("tcp", target, 5*time.Second)
				return err
			})
			if err != nil {
				log.Warn("agent relay", "netns", nsPath, "err", err)
				return
			}
			defer up.Close()
			go func() {
				io.Copy(up, conn)
				up.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(conn, up)
		}()
	}
}

// Stop closes the listeners and waits for their loops.
func (r *AgentRelays) Stop() {
	for _, ln := range r.lns {
		ln.Close()
	}
	r.lns = nil
	r.wg.Wait()
}
