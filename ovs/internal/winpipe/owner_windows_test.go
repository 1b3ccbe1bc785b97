package winpipe

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestOwnProcess: a relay that admits its own process only relays this
// process's connection, and PeerPID finds this process behind it.
func TestOwnProcess(t *testing.T) {
	dial, dials := echoDial()
	r, err := NewRelay(dial, OwnProcess, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c := dialRelay(t, r)
	roundTrip(t, c, bufio.NewReader(c), "mine")
	if dials.Load() != 1 {
		t.Errorf("relay dialled %d times", dials.Load())
	}
}

// TestOwnProcessRefusesOthers: another process (this test binary run again
// as a client) connecting to the relay is closed on, and the relay never
// dials the pipe for it.
func TestOwnProcessRefusesOthers(t *testing.T) {
	dial, dials := echoDial()
	refusals := make(chan error, 10)
	admit := func(c net.Conn) error {
		err := OwnProcess(c)
		if err != nil {
			refusals <- err
		}
		return err
	}
	r, err := NewRelay(dial, admit, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperRelayClient$", "-test.v")
	cmd.Env = append(os.Environ(), "SEINE_RELAY_CLIENT="+r.Addr())
	out, err := cmd.CombinedOutput()
	t.Logf("client process: %v\n%s", err, out)
	if !strings.Contains(string(out), "client: refused") {
		t.Errorf("another process's connection was not refused:\n%s", out)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("relay dialled %d times for another process", n)
	}
	select {
	case err := <-refusals:
		if !strings.Contains(err.Error(), fmt.Sprintf("not from this one (%d)", os.Getpid())) || strings.Contains(err.Error(), fmt.Sprintf("from process %d,", os.Getpid())) {
			t.Errorf("refused with %v, want another process's ID named", err)
		}
		t.Logf("refused: %v", err)
	default:
		t.Error("the relay's admit function refused nothing")
	}
	// The relay still serves its own process afterwards.
	c := dialRelay(t, r)
	roundTrip(t, c, bufio.NewReader(c), "still mine")
	select {
	case err := <-refusals:
		t.Errorf("refused this process's connection: %v", err)
	default:
	}
}

// TestHelperRelayClient is the other process of TestOwnProcessRefusesOthers:
// it connects to the relay, sends a line and says whether it came back.
func TestHelperRelayClient(t *testing.T) {
	addr := os.Getenv("SEINE_RELAY_CLIENT")
	if addr == "" {
		t.Skip("the client process of TestOwnProcessRefusesOthers, run by it")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("client: dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "theirs\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	switch {
	case line == "theirs\n":
		fmt.Println("client: relayed")
	case err != nil:
		fmt.Printf("client: refused (%v)\n", err)
	default:
		fmt.Printf("client: got %q\n", line)
	}
}
