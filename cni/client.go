package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// ErrAgentUnreachable is matched (errors.Is) by Client errors that mean no
// agent accepted the connection: the socket is missing, refuses, or the
// dial did not complete.
var ErrAgentUnreachable = errors.New("seine-agent is not reachable")

// UnreachableError says which socket could not be reached and why.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("seine-agent is not reachable at %s: %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() []error { return []error{ErrAgentUnreachable, e.Err} }

// maxResponseBytes bounds what the client reads from the agent.
const maxResponseBytes = 4 << 20

// Client sends requests to the agent's CNI server over its unix socket.
type Client struct {
	Socket string
}

// NewClient returns a client for the agent serving on socket.
func NewClient(socket string) *Client { return &Client{Socket: socket} }

// Do sends req and returns the agent's response. Unless req.TimeoutMillis
// is set, it tells the agent how long ctx leaves it. Transport failures are
// returned as errors: an *UnreachableError when the connection could not be
// made, ctx's error when it ended first, other I/O errors otherwise. A CNI
// error reported by the agent is in Response.Error, not in the returned error.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	if dl, ok := ctx.Deadline(); ok && req.TimeoutMillis == 0 {
		req.TimeoutMillis = time.Until(dl).Milliseconds()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", c.Socket)
			if err != nil {
				// "dial unix <socket>: connect: refused" would name the socket twice.
				var op *net.OpError
				if errors.As(err, &op) && op.Err != nil {
					err = op.Err
				}
				return nil, &UnreachableError{Socket: c.Socket, Err: err}
			}
			return conn, nil
		},
		DisableKeepAlives: true,
	}}
	defer hc.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://seine-agent"+req.Command.Path(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := hc.Do(hreq)
	if err != nil {
		var ue *UnreachableError
		if errors.As(err, &ue) {
			return nil, ue
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("talk to seine-agent at %s: %w", c.Socket, err)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponseBytes))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("read seine-agent response from %s: %w", c.Socket, err)
	}
	resp := &Response{}
	if err := json.Unmarshal(data, resp); err != nil || (resp.Error == nil && hresp.StatusCode != http.StatusOK) {
		return nil, &BadResponseError{Socket: c.Socket, Status: hresp.StatusCode, Body: truncate(data, 200), Err: err}
	}
	return resp, nil
}

// BadResponseError is an answer that is not a protocol response, typically
// from an agent speaking another protocol version.
type BadResponseError struct {
	Socket string
	Status int
	Body   string
	Err    error
}

func (e *BadResponseError) Error() string {
	msg := fmt.Sprintf("seine-agent at %s answered HTTP %d %q", e.Socket, e.Status, e.Body)
	if e.Status == http.StatusNotFound {
		msg += fmt.Sprintf(": it does not serve protocol %s; seine-cni and seine-agent versions differ", ProtocolVersion)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *BadResponseError) Unwrap() error { return e.Err }

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// WriteResponse writes resp as the body of an HTTP answer. Protocol-level
// failures (bad request, unknown path) use a non-200 status; CNI errors from
// the handler are a 200 with Error set, so the plugin can tell them apart.
func WriteResponse(w http.ResponseWriter, status int, resp *Response) error {
	data, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(data)
	return err
}

// Errorf builds a CNI error with a formatted message.
func Errorf(code uint, format string, a ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, a...), "")
}
