//go:build !linux

package probe

import "net"

func listenSCTP(int32) (net.Listener, error) { return nil, ErrSCTPUnsupported }
