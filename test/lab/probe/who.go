package probe

import (
	"bufio"
	"fmt"
	"net"
	"strconv"

	"github.com/seine-cni/seine/test/lab/netns"
)

// ServeWho listens on TCP port inside the network namespace at netnsPath
// ("" = the current one) and answers every line a client sends with
// "<name> saw <client IP>", so a test sees which endpoint a Service picked
// and the source address it got (SNAT or not). Closing the listener stops it.
func ServeWho(netnsPath, name string, port int) (net.Listener, error) {
	var ln net.Listener
	if err := netns.Do(netnsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		return nil, fmt.Errorf("who server of %s: %w", name, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s saw %s\n", name, host)
				}
			}()
		}
	}()
	return ln, nil
}
