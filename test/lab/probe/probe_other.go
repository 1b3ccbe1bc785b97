//go:build !linux

package probe

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// dial is Linux only: telling a drop from every other silence needs the kernel's
// neighbour table and poll(2) on the namespace's own thread.
func dial(context.Context, string, string, time.Duration) (string, error) {
	return "", fmt.Errorf("probes run on Linux only: %w", errors.ErrUnsupported)
}

func classify(err error) error { return err }
