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

// ServeAPIProxy makes kube-apiserver reachable at the same loopback address
// inside every node namespace. It listens on listenAddr inside each namespace
// in nsPaths (the sockets are created on a thread switched into that
// namespace) and relays every connection to target, dialled from the
// machine's own namespace.
//
// Why not route to the apiserver over the fabric: nodes would then reach the
// control plane through the very data path a CNI under test rebuilds (in the
// bridged-uplink topology the node IP moves onto the OVS bridge), and a
// broken pipeline would take the node's Kubernetes connection down with it.
// Real clusters keep that path robust; the lab keeps it out of the way.
func ServeAPIProxy(ctx context.Context, log *slog.Logger, listenAddr, target string, nsPaths []string) error {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, p := range nsPaths {
		var ln net.Listener
		err := netns.Do(p, func() error {
			var err error
			ln, err = net.Listen("tcp", listenAddr)
			return err
		})
		if err != nil {
			return fmt.Errorf("listen on %s in %s: %w", listenAddr, p, err)
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
						log.Error("accept", "netns", nsPaths[i], "err", err)
					}
					return
				}
				go relay(ctx, log, conn, target)
			}
		}()
	}
	log.Info("api proxy serving", "listen", listenAddr, "target", target, "namespaces", len(lns))
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
