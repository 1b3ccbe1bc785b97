//go:build !linux

package probe

import (
	"context"
	"net"
)

func listenSCTP(int32) (net.Listener, error) { return nil, ErrSCTPUnsupported }

func probeSCTP(context.Context, string) (string, error) { return "", ErrSCTPUnsupported }
