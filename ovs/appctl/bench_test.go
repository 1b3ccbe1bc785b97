package appctl

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
)

// BenchmarkCallLargeReply: one call whose reply is a 10 MB text (what
// dpctl/dump-conntrack prints for 50,000 connections), from a server that
// sends a prepared reply, so the client's decoding is what is measured.
//
//	go test -run '^$' -bench CallLargeReply -benchmem ./ovs/appctl
func BenchmarkCallLargeReply(b *testing.B) {
	line := `udp,orig=(src=10.244.1.5,dst=10.244.2.7,sport=40000,dport=10001),reply=(src=10.244.2.7,dst=10.244.1.5,sport=10001,dport=40000),zone=65520,mark=0,labels=0x29dabaf2000000000000000000000000,timeout=29` + "\n"
	text := strings.Repeat(line, 50_000)
	enc, err := json.Marshal(text)
	if err != nil {
		b.Fatal(err)
	}
	reply := append(append([]byte(`{"id":0,"result":`), enc...), `,"error":null}`...)
	a, s := net.Pipe()
	c := New(a)
	defer c.Close()
	go func() {
		dec := json.NewDecoder(s)
		for {
			var req map[string]any
			if dec.Decode(&req) != nil {
				return
			}
			id, _ := json.Marshal(req["id"])
			if _, err := s.Write(append(append([]byte(`{"id":`), id...), reply[len(`{"id":0`):]...)); err != nil {
				return
			}
		}
	}()
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		out, err := c.Call(context.Background(), "dpctl/dump-conntrack")
		if err != nil || len(out) != len(text) {
			b.Fatalf("%d bytes, %v", len(out), err)
		}
	}
}

// TestUnquoteIsEncodingJSONs: unquote decodes what encoding/json decodes,
// for the escapes unixctl output has and those it leaves to encoding/json
// (\u escapes, surrogate pairs, bytes that are not UTF-8), and refuses
// what is not a string.
func TestUnquoteIsEncodingJSONs(t *testing.T) {
	for _, raw := range []string{
		`""`, `"plain"`, `"tcp,orig=(src=10.0.0.1)\nudp,orig=(src=10.0.0.2)\n"`,
		`"\"quoted\" \\ back\/slash \b\f\n\r\t"`, `"\\"`, `"trailing\\"`, `"\\n is not a newline"`,
		`"\u00e9t\u00E9"`, `"\ud83d\ude00 pair"`, `"\ud83d lone"`, "\"caf\xc3\xa9\"", "\"bad \xff byte\"",
		`"tab\tand \u0000"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatalf("%s: encoding/json: %v", raw, err)
		}
		got, err := unquote([]byte(raw))
		if err != nil || got != want {
			t.Errorf("unquote(%s) = %q, %v; encoding/json: %q", raw, got, err, want)
		}
	}
	for _, bad := range []string{``, `"`, `x"`, `"x`, `null`} {
		if got, err := unquote([]byte(bad)); err == nil {
			t.Errorf("unquote(%s) = %q, want an error", bad, got)
		}
	}
}
