package proxier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/seine-cni/seine/core/proxy"
)

// HealthChecks serves the health-check node port of every Service with
// externalTrafficPolicy Local (type LoadBalancer), as kube-proxy does: an
// external load balancer asks each node, and only nodes with a local ready
// endpoint answer 200 (503 otherwise), so it sends the traffic only there.
// A node whose local endpoints are all terminating answers 503 while the
// proxy still sends them the traffic that arrives (its fallback), so the
// load balancer drains the node. The answer is kube-proxy's JSON.
type HealthChecks struct {
	log    *slog.Logger
	listen func(port uint16) (net.Listener, error)

	mu      sync.Mutex
	servers map[uint16]*hcServer
	bySvc   map[string]uint16
}

type hcServer struct {
	srv *http.Server

	mu        sync.Mutex
	namespace string
	name      string
	local     int
}

// NewHealthChecks serves on every address of the host (listen nil) or
// where listen says.
func NewHealthChecks(log *slog.Logger, listen func(port uint16) (net.Listener, error)) *HealthChecks {
	if listen == nil {
		listen = func(port uint16) (net.Listener, error) {
			return net.Listen("tcp", ":"+strconv.Itoa(int(port)))
		}
	}
	return &HealthChecks{log: log, listen: listen, servers: map[uint16]*hcServer{}, bySvc: map[string]uint16{}}
}

// Set makes the health-check node port of Service k (nil: gone) answer
// with its local endpoints.
func (h *HealthChecks) Set(k string, s *proxy.Service) {
	var port uint16
	local := 0
	var ns, name string
	if s != nil {
		ns, name = s.Namespace, s.Name
		seen := map[string]bool{}
		for i := range s.Ports {
			p := &s.Ports[i]
			if p.HealthCheckNodePort == 0 {
				continue
			}
			port = p.HealthCheckNodePort
			for _, e := range p.LocalEndpoints {
				// Ready ones only, as kube-proxy counts
				// (EndpointsMap.LocalReadyEndpoints): LocalEndpoints
				// holds the serving terminating ones when none is ready.
				if e.Ready && !seen[e.IP.String()] {
					seen[e.IP.String()] = true
					local++
				}
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.bySvc[k]; ok && old != port {
		h.stopLocked(k, old)
	}
	if port == 0 {
		return
	}
	srv := h.servers[port]
	if srv == nil {
		ln, err := h.listen(port)
		if err != nil {
			h.log.Error("health-check node port", "service", k, "port", port, "err", err)
			return
		}
		srv = &hcServer{}
		srv.srv = &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Warn("health-check node port", "port", port, "err", err)
			}
		}()
		h.servers[port] = srv
	}
	h.bySvc[k] = port
	srv.mu.Lock()
	srv.namespace, srv.name, srv.local = ns, name, local
	srv.mu.Unlock()
}

func (h *HealthChecks) stopLocked(k string, port uint16) {
	delete(h.bySvc, k)
	if srv := h.servers[port]; srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.srv.Shutdown(ctx)
		cancel()
		delete(h.servers, port)
	}
}

// Close stops every server.
func (h *HealthChecks) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, port := range h.bySvc {
		h.stopLocked(k, port)
	}
}

func (s *hcServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	body := map[string]any{
		"service":             map[string]string{"namespace": s.namespace, "name": s.name},
		"localEndpoints":      s.local,
		"serviceProxyHealthy": true,
	}
	local := s.local
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(local))
	if local == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if err := json.NewEncoder(w).Encode(body); err != nil {
		fmt.Fprintln(w)
	}
}
