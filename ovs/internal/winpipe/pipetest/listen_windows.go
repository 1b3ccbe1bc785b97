package pipetest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/windows"
)

const bufSize = 64 << 10

// Listen serves the local pipe name (`\\.\pipe\...`) until the test ends.
func Listen(t testing.TB, name string) net.Listener {
	t.Helper()
	l := &listener{name: name, done: make(chan struct{})}
	h, err := l.instance(true)
	if err != nil {
		t.Fatalf("listen on pipe %s: %v", name, err)
	}
	l.next = h
	t.Cleanup(func() { l.Close() })
	return l
}

type listener struct {
	name string
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	next windows.Handle // the instance waiting for a client; 0 once closed
}

func (l *listener) instance(first bool) (windows.Handle, error) {
	p, err := windows.UTF16PtrFromString(l.name)
	if err != nil {
		return 0, err
	}
	openMode := uint32(windows.PIPE_ACCESS_DUPLEX | windows.FILE_FLAG_OVERLAPPED)
	if first {
		openMode |= windows.FILE_FLAG_FIRST_PIPE_INSTANCE
	}
	return windows.CreateNamedPipe(p, openMode,
		windows.PIPE_TYPE_BYTE|windows.PIPE_READMODE_BYTE|windows.PIPE_WAIT|windows.PIPE_REJECT_REMOTE_CLIENTS,
		windows.PIPE_UNLIMITED_INSTANCES, bufSize, bufSize, 0, nil)
}

// Accept waits for a client on the current instance and, before handing it
// out, creates the next one so that clients never find the pipe missing.
func (l *listener) Accept() (net.Conn, error) {
	l.mu.Lock()
	h := l.next
	l.mu.Unlock()
	if h == 0 {
		return nil, net.ErrClosed
	}
	ev, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("create event: %w", err)
	}
	defer windows.CloseHandle(ev)
	ov := windows.Overlapped{HEvent: ev}
	err = windows.ConnectNamedPipe(h, &ov)
	if errors.Is(err, windows.ERROR_IO_PENDING) {
		// Close cancels the wait with CancelIoEx, which signals ev.
		var n uint32
		_, _ = windows.WaitForSingleObject(ev, windows.INFINITE)
		err = windows.GetOverlappedResult(h, &ov, &n, false)
	}
	if err != nil && !errors.Is(err, windows.ERROR_PIPE_CONNECTED) {
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		return nil, fmt.Errorf("connect pipe %s: %w", l.name, err)
	}
	next, err := l.instance(false)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == 0 { // closed meanwhile: h was closed too
		if err == nil {
			windows.CloseHandle(next)
		}
		return nil, net.ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("new instance of pipe %s: %w", l.name, err)
	}
	l.next = next
	return &conn{File: os.NewFile(uintptr(h), l.name), addr: addr(l.name)}, nil
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		h := l.next
		l.next = 0
		l.mu.Unlock()
		_ = windows.CancelIoEx(h, nil)
		_ = windows.CloseHandle(h)
	})
	return nil
}

func (l *listener) Addr() net.Addr { return addr(l.name) }

type addr string

func (a addr) Network() string { return "pipe" }
func (a addr) String() string  { return string(a) }

// conn is an accepted pipe instance.
type conn struct {
	*os.File
	addr addr
}

func (c *conn) LocalAddr() net.Addr  { return c.addr }
func (c *conn) RemoteAddr() net.Addr { return c.addr }
