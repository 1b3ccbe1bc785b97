//go:build !windows

package winpipe

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Dial fails: named pipes exist only on Windows. The error wraps
// errors.ErrUnsupported.
func Dial(ctx context.Context, name string) (net.Conn, error) {
	return nil, fmt.Errorf("dial pipe %s: named pipes need Windows: %w", name, errors.ErrUnsupported)
}
