package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/seine-cni/seine/test/lab/netns"
)

// ProxyListen is one address the api proxy listens on, inside the network
// namespace at NetNS.
type ProxyListen struct{ NetNS, Addr string }

// ServeAPIProxy makes kube-apiserver reachable inside the node namespaces:
// at the same loopback address in every one of them, and at the address
// the apiserver advertises (the "kubernetes" Service's endpoint) in the
// control-plane node's (Config.APIListens). It listens on each of listens
// (the sockets are created on a thread switched into that namespace) and
// relays every connection to target, dialled from the machine's own
// namespace.
//
// Why not route to the apiserver over the fabric: nodes would then reach the
// control plane through the very data path a CNI under test rebuilds (in the
// bridged-uplink topology the node IP moves onto the OVS bridge), and a
// broken pipeline would take the node's Kubernetes connection down with it.
// Real clusters keep that path robust; the lab keeps it out of the way.
func ServeAPIProxy(ctx context.Context, log *slog.Logger, target string, listens []ProxyListen) error {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, l := range listens {
		var ln net.Listener
		err := netns.Do(l.NetNS, func() error {
			var err error
			ln, err = net.Listen("tcp", l.Addr)
			return err
		})
		if err != nil {
			return fmt.Errorf("listen on %s in %s: %w", l.Addr, l.NetNS, err)
		}
		lns = append(lns, ln)
	}
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				conn, err := ln.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						log.Error("accept", "netns", listens[i].NetNS, "addr", listens[i].Addr, "err", err)
					}
					return
				}
				go relay(ctx, log, conn, target)
			}
		}()
	}
	log.Info("api proxy serving", "target", target, "listeners", len(lns))
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
	return nil
}

func relay(ctx context.Context, log *slog.Logger, in net.Conn, target string) {
	defer in.Close()
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		log.Warn("dial apiserver", "target", target, "err", err)
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}
