package winpipe

import (
	"context"
	"fmt"
	"net"

	"github.com/Microsoft/go-winio"
)

// Dial connects to the local named pipe name (see Name). It waits while every
// instance of the pipe is busy, until ctx ends.
func Dial(ctx context.Context, name string) (net.Conn, error) {
	n, err := Name(name)
	if err != nil {
		return nil, err
	}
	c, err := winio.DialPipeContext(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("dial pipe %s: %w", n, err)
	}
	return c, nil
}
