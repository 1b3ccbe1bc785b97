package flowexport

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/go-ipfix/pkg/collector"
	"github.com/vmware/go-ipfix/pkg/entities"
)

// received is one data record as go-ipfix's collector decoded it.
type received struct {
	obsDomain uint32
	template  uint16
	fields    map[string]any
}

// startCollector runs go-ipfix's collecting process on addr ("127.0.0.1:0"
// for any port) and returns its address and the data records it decodes.
// It is stopped in t.Cleanup.
func startCollector(t testing.TB, proto, addr string) (string, <-chan received) {
	t.Helper()
	_, ch, a := startCollectorProcess(t, proto, addr)
	return a, ch
}

// skipUnlessUDPSockets skips t where this process cannot open a UDP socket
// at all: a Windows test binary under Wine 8, whose ws2_32 refuses the
// SIO_UDP_NETRESET ioctl Go's net package (since Go 1.23) sets on every
// UDP socket on Windows. On Windows itself the socket opens and the test
// runs; anywhere else a failure fails the test.
func skipUnlessUDPSockets(t testing.TB) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err == nil {
		c.Close()
		return
	}
	if runtime.GOOS == "windows" && strings.Contains(err.Error(), "wsaioctl") {
		t.Skipf("no UDP socket opens in this Windows process (Wine refuses the ioctl Go sets on each): %v", err)
	}
	t.Fatalf("open a UDP socket: %v", err)
}

// startCollectorProcess is startCollector that also returns the process
// (to stop it early: Stop twice is not allowed, so Cleanup skips a
// stopped one).
func startCollectorProcess(t testing.TB, proto, addr string) (*stoppable, <-chan received, string) {
	t.Helper()
	if proto == "udp" {
		skipUnlessUDPSockets(t)
	}
	cp, err := collector.InitCollectingProcess(collector.CollectorInput{
		Address: addr, Protocol: proto, MaxBufferSize: 65535, TemplateTTL: 0,
		DecodingMode: collector.DecodingModeStrict,
	})
	if err != nil {
		t.Fatal(err)
	}
	go cp.Start()
	deadline := time.Now().Add(10 * time.Second)
	var a net.Addr
	for {
		a = cp.GetAddress()
		if a == nil {
			// not listening yet
		} else if _, port, _ := net.SplitHostPort(a.String()); port != "0" && port != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector did not start on %s", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	out := make(chan received, 100000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range cp.GetMsgChan() {
			set := m.GetSet()
			if set.GetSetType() != entities.Data {
				continue
			}
			for _, r := range set.GetRecords() {
				out <- received{obsDomain: m.GetObsDomainID(), template: r.GetTemplateID(), fields: r.GetElementMap()}
			}
		}
	}()
	s := &stoppable{stop: func() {
		cp.Stop()
		<-done
	}}
	t.Cleanup(s.Stop)
	return s, out, a.String()
}

// stoppable stops a collector once.
type stoppable struct {
	once sync.Once
	stop func()
}

func (s *stoppable) Stop() { s.once.Do(s.stop) }

// collect waits for n records (at most timeout) and returns them.
func collect(t testing.TB, ch <-chan received, n int, timeout time.Duration) []received {
	t.Helper()
	var got []received
	end := time.After(timeout)
	for len(got) < n {
		select {
		case r := <-ch:
			got = append(got, r)
		case <-end:
			t.Fatalf("collector decoded %d records in %s, want %d", len(got), timeout, n)
		}
	}
	return got
}
