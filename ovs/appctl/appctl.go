// Package appctl is a native client of OVS's unixctl protocol, the one behind
// ovs-appctl: JSON-RPC 1.0 over a stream socket (ovs-vswitchd.<pid>.ctl), one
// request at a time, every parameter a string, the result plain text.
//
// A request is {"method":"dpif/show","params":[],"id":N}; the daemon answers
// {"id":N,"result":"<text>","error":null} or {"id":N,"result":null,"error":"<text>"}.
// Messages are bare JSON objects back to back, with no framing, so the client
// reads them with a streaming decoder.
package appctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Error is a command the daemon refused; Text is its error message, as
// ovs-appctl prints it on stderr.
type Error struct {
	Method string
	Text   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("appctl %s: %s", e.Method, strings.TrimRight(e.Text, "\n"))
}

// ErrClosed is returned by calls on a closed client, including one closed
// because an earlier call was interrupted mid-reply.
var ErrClosed = errors.New("appctl client closed")

// DialFunc opens a stream to a unixctl socket. The default dials a unix
// socket; it is the seam for transports a platform needs instead.
type DialFunc func(ctx context.Context, path string) (net.Conn, error)

// DialUnix dials a unix stream socket.
func DialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

// CtlPath resolves an ovs-appctl style target: a path containing "/" is used
// as is; a program name ("ovs-vswitchd", "ovsdb-server") is looked up through
// its pidfile in rundir, giving <rundir>/<name>.<pid>.ctl.
func CtlPath(rundir, target string) (string, error) {
	if strings.Contains(target, "/") {
		return target, nil
	}
	pidfile := filepath.Join(rundir, target+".pid")
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return "", fmt.Errorf("appctl target %s: %w", target, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return "", fmt.Errorf("appctl target %s: bad pidfile %s: %q", target, pidfile, b)
	}
	return filepath.Join(rundir, fmt.Sprintf("%s.%d.ctl", target, pid)), nil
}

// Client is a connection to one daemon's unixctl server. Calls are serialised;
// the client is safe for concurrent use.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	dec    *json.Decoder
	enc    *json.Encoder
	nextID uint64
	closed bool
}

// Dial connects to the unixctl socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	return DialWith(ctx, path, DialUnix)
}

// DialWith connects to path with dial.
func DialWith(ctx context.Context, path string, dial DialFunc) (*Client, error) {
	conn, err := dial(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("appctl dial %s: %w", path, err)
	}
	return New(conn), nil
}

// DialTarget connects to target (see CtlPath) in rundir.
func DialTarget(ctx context.Context, rundir, target string) (*Client, error) {
	path, err := CtlPath(rundir, target)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, path)
}

// New wraps an established connection.
func New(conn net.Conn) *Client {
	return &Client{conn: conn, dec: json.NewDecoder(conn), enc: json.NewEncoder(conn)}
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

type request struct {
	Method string   `json:"method"`
	Params []string `json:"params"`
	ID     any      `json:"id"`
}

// message is anything the server sends: a reply to us, or (in principle) a
// request of its own such as "echo".
type message struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result result          `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// result is a reply's result as Call returns it, decoded as it is read: a
// unixctl command's text unquoted (a dump of 50,000 connections is about
// 10 MB: kept as a RawMessage it was copied once more before being
// unquoted); any other JSON value (OVS 3.3+ returns objects when asked for
// --format=json) as its JSON text; null or no result as "".
type result string

func (r *result) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		*r = ""
	case len(b) > 0 && b[0] == '"':
		s, err := unquote(b)
		*r = result(s)
		return err
	default:
		*r = result(b)
	}
	return nil
}

// Call runs method with args and returns its text output. A command the daemon
// refuses returns *Error. If ctx ends while waiting, the client is closed (the
// reply could still arrive and desynchronise the stream) and ctx's error returned.
func (c *Client) Call(ctx context.Context, method string, args ...string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", fmt.Errorf("appctl %s: %w", method, ErrClosed)
	}
	if args == nil {
		args = []string{}
	}
	id := c.nextID
	c.nextID++

	// Deadlines make blocked reads and writes return when ctx ends.
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(d)
	} else {
		_ = c.conn.SetDeadline(time.Time{})
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired // do not let a late deadline land on the next call
		}
	}()

	fail := func(err error) (string, error) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Only ctx sets deadlines on conn: its deadline or its
			// cancellation. Its Err may lag the socket's timer by a moment.
			<-ctx.Done()
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		c.closed = true
		_ = c.conn.Close()
		return "", fmt.Errorf("appctl %s: %w", method, err)
	}
	if err := c.enc.Encode(request{Method: method, Params: args, ID: id}); err != nil {
		return fail(err)
	}
	for {
		var m message
		if err := c.dec.Decode(&m); err != nil {
			return fail(err)
		}
		if m.Method != "" { // a request from the server
			if err := c.answer(m); err != nil {
				return fail(err)
			}
			continue
		}
		var gotID uint64
		if err := json.Unmarshal(m.ID, &gotID); err != nil || gotID != id {
			return fail(fmt.Errorf("reply id %s, want %d", m.ID, id))
		}
		return decodeReply(method, m)
	}
}

// answer replies to a server-initiated request: "echo" gets its params back
// (JSON-RPC keepalive); anything else an error.
func (c *Client) answer(m message) error {
	reply := map[string]any{"id": m.ID}
	if m.Method == "echo" {
		reply["result"], reply["error"] = m.Params, nil
	} else {
		reply["result"], reply["error"] = nil, "unknown method "+m.Method
	}
	return c.enc.Encode(reply)
}

// unquote decodes the JSON string b (quotes included), which the decoder
// has already checked, into a string with one copy (encoding/json makes
// two: the unescaped bytes, then the string). What it does not expect — a
// \u escape, bytes that are not UTF-8 (encoding/json replaces them) — it
// leaves to encoding/json.
func unquote(b []byte) (string, error) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", fmt.Errorf("not a JSON string: %.20q", b)
	}
	in := b[1 : len(b)-1]
	slow := func() (string, error) {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	}
	if !utf8.Valid(in) {
		return slow()
	}
	var sb strings.Builder
	sb.Grow(len(in))
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\\')
		if i < 0 {
			sb.Write(in)
			break
		}
		sb.Write(in[:i])
		if i+1 == len(in) {
			return slow()
		}
		switch c := in[i+1]; c {
		case '"', '\\', '/':
			sb.WriteByte(c)
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		default:
			return slow()
		}
		in = in[i+2:]
	}
	return sb.String(), nil
}

func decodeReply(method string, m message) (string, error) {
	if len(m.Error) > 0 && string(m.Error) != "null" {
		var text string
		if err := json.Unmarshal(m.Error, &text); err != nil {
			text = string(m.Error) // not a string: show the JSON
		}
		return "", &Error{Method: method, Text: text}
	}
	return string(m.Result), nil
}
