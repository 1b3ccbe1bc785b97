package lab

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// HTTPGetInNS does a GET over a TCP connection made inside the network
// namespace at netns (a node's agent health endpoint listens on the node's
// loopback) and returns the status code and the trimmed body.
func HTTPGetInNS(ctx context.Context, netns, url string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}
