package winpipe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/internal/winpipe/pipetest"
)

// listenEcho serves a line echo on a fresh pipe and returns its name.
func listenEcho(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf(`\\.\pipe\seine-winpipe-test-%d-%d`, os.Getpid(), time.Now().UnixNano())
	ln := pipetest.Listen(t, name)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return name
}

func TestDialPipe(t *testing.T) {
	name := listenEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip(t, c, bufio.NewReader(c), "over the pipe")
}

func TestDialMissingPipe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name := fmt.Sprintf(`\\.\pipe\seine-winpipe-missing-%d`, os.Getpid())
	if c, err := Dial(ctx, name); err == nil {
		c.Close()
		t.Fatalf("dial of missing pipe %s succeeded", name)
	}
}

func TestRelayToPipe(t *testing.T) {
	name := listenEcho(t)
	r := newRelay(t, func(ctx context.Context) (net.Conn, error) { return Dial(ctx, name) })
	c := dialRelay(t, r)
	roundTrip(t, c, bufio.NewReader(c), "tcp to pipe")
}
