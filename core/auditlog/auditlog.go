// Package auditlog writes the node's policy audit log: one line per
// connection that a tiered policy rule with enableLogging decided, from the
// packet-in of its first packet (core/pipeline PolicyLogMeter bounds their
// rate). The file is rotated by size and keeps a bounded number of old
// files, so the log never grows without bound; the queue in front of it is
// bounded too, so a flood never grows the agent's memory. See README.md.
package auditlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/seine-cni/seine/core/internal/inet"
)

// Entry is one decided connection.
type Entry struct {
	Time time.Time
	// Policy is the user's policy: kind/name, or kind/namespace/name for a
	// namespaced one ("" when the agent no longer knows it).
	Policy string
	// Rule is the rule's name, or "<direction>/<index>" when it has none.
	Rule      string
	Direction string // Ingress or Egress
	Action    string // Allow, Drop, Reject, Pass
	Protocol  uint8  // IP protocol number
	// Src and Dst are the addresses and ports (0 for a protocol without
	// ports) of the connection's first packet.
	Src, Dst netip.AddrPort
	// SrcPod and DstPod are namespace/name of the pods, node/<name> of a
	// Node, or "" when the address is none the agent knows.
	SrcPod, DstPod string
}

// Line is the entry as the log writes it: space-separated fields, "-" for
// an empty one, ending in a newline:
//
//	<time RFC 3339, µs, UTC> <policy> <rule> <direction> <action> <protocol> <src ip:port> <dst ip:port> <src pod> <dst pod>
func (e Entry) Line() string {
	dash := func(s string) string {
		if s == "" || strings.ContainsAny(s, " \n") {
			return "-"
		}
		return s
	}
	return strings.Join([]string{
		e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), dash(e.Policy), dash(e.Rule), dash(e.Direction),
		dash(e.Action), ProtocolName(e.Protocol), e.Src.String(), e.Dst.String(), dash(e.SrcPod), dash(e.DstPod),
	}, " ") + "\n"
}

// ProtocolName is TCP, UDP, SCTP, ICMP, or the protocol's number.
func ProtocolName(p uint8) string {
	switch p {
	case 1:
		return "ICMP"
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

// ParseFrame reads the IPv4 protocol, addresses and ports of an Ethernet
// frame (with or without one 802.1Q tag).
func ParseFrame(b []byte) (proto uint8, src, dst netip.AddrPort, err error) {
	eth, ip, err := inet.EtherPayload(b)
	if err != nil {
		return 0, src, dst, err
	}
	if eth != 0x0800 {
		return 0, src, dst, fmt.Errorf("ethertype %#04x is not IPv4", eth)
	}
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return 0, src, dst, fmt.Errorf("bad IPv4 header")
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl {
		return 0, src, dst, fmt.Errorf("bad IPv4 header length %d", ihl)
	}
	proto = ip[9]
	s, d := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	var sport, dport uint16
	l4 := ip[ihl:]
	first := binary.BigEndian.Uint16(ip[6:])&0x1fff == 0 // not a later fragment
	if first && (proto == 6 || proto == 17 || proto == 132) && len(l4) >= 4 {
		sport, dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
	}
	return proto, netip.AddrPortFrom(s, sport), netip.AddrPortFrom(d, dport), nil
}

// Config configures a Logger; zero values take the defaults.
type Config struct {
	// Path is the log file (DefaultPath: /var/log/seine/networkpolicy/np.log
	// on Linux, the agent's log directory on Windows).
	Path string
	// MaxSizeMB is the size at which the file is rotated (DefaultMaxSizeMB).
	MaxSizeMB int
	// MaxBackups is how many rotated files are kept (DefaultMaxBackups).
	MaxBackups int
	// Queue is how many entries may wait for the writer (DefaultQueue).
	Queue int
	// Repeat is how long the same rule and 5-tuple count as the same
	// connection (a dropped connection's retransmitted SYNs are new to
	// conntrack each time): one line, not one per retransmission
	// (DefaultRepeat).
	Repeat time.Duration
}

// Defaults.
const (
	DefaultMaxSizeMB  = 100
	DefaultMaxBackups = 3
	DefaultQueue      = 1024
	DefaultRepeat     = time.Minute
	// repeatEntries bounds the memory of Repeat: when that many
	// connections are remembered, the oldest half is forgotten.
	repeatEntries = 8192
)

// Logger writes entries to the rotated file, from one goroutine (Run).
type Logger struct {
	cfg     Config
	w       io.WriteCloser
	ch      chan Entry
	dropped atomic.Uint64
	written atomic.Uint64
	seen    map[string]time.Time
	dirMade bool
}

// New returns a Logger; it touches no file until the first entry is
// written (then it creates the directory).
func New(cfg Config) (*Logger, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.MaxSizeMB <= 0 {
		cfg.MaxSizeMB = DefaultMaxSizeMB
	}
	if cfg.MaxBackups <= 0 {
		cfg.MaxBackups = DefaultMaxBackups
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Repeat <= 0 {
		cfg.Repeat = DefaultRepeat
	}
	return &Logger{
		cfg:  cfg,
		w:    &lumberjack.Logger{Filename: cfg.Path, MaxSize: cfg.MaxSizeMB, MaxBackups: cfg.MaxBackups},
		ch:   make(chan Entry, cfg.Queue),
		seen: make(map[string]time.Time),
	}, nil
}

// Path is the log file.
func (l *Logger) Path() string { return l.cfg.Path }

// Log queues e; it never blocks. It reports false when the queue was full
// and e was dropped (counted in Dropped).
func (l *Logger) Log(e Entry) bool {
	select {
	case l.ch <- e:
		return true
	default:
		l.dropped.Add(1)
		return false
	}
}

// Dropped is the number of entries dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Written is the number of lines written.
func (l *Logger) Written() uint64 { return l.written.Load() }

// Run writes queued entries until ctx ends, then closes the file.
func (l *Logger) Run(ctx context.Context) error {
	defer l.w.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-l.ch:
			if err := l.write(e); err != nil {
				return err
			}
		}
	}
}

// write writes e unless it repeats a connection written within Repeat.
func (l *Logger) write(e Entry) error {
	key := e.Policy + " " + e.Rule + " " + e.Direction + " " + ProtocolName(e.Protocol) + " " + e.Src.String() + " " + e.Dst.String()
	if t, ok := l.seen[key]; ok && e.Time.Sub(t) < l.cfg.Repeat && !e.Time.Before(t) {
		return nil
	}
	if len(l.seen) >= repeatEntries {
		l.forgetOldest()
	}
	l.seen[key] = e.Time
	if !l.dirMade {
		if err := os.MkdirAll(filepath.Dir(l.cfg.Path), 0o750); err != nil {
			return fmt.Errorf("policy audit log: %w", err)
		}
		l.dirMade = true
	}
	if _, err := io.WriteString(l.w, e.Line()); err != nil {
		return fmt.Errorf("policy audit log: %w", err)
	}
	l.written.Add(1)
	return nil
}

// forgetOldest forgets the older half of the remembered connections.
func (l *Logger) forgetOldest() {
	times := make([]time.Time, 0, len(l.seen))
	for _, t := range l.seen {
		times = append(times, t)
	}
	// Up to the mean time: about the older half, without sorting.
	var sum time.Duration
	base := times[0]
	for _, t := range times {
		sum += t.Sub(base) / time.Duration(len(times))
	}
	cut := base.Add(sum)
	for k, t := range l.seen {
		if !t.After(cut) {
			delete(l.seen, k)
		}
	}
	if len(l.seen) >= repeatEntries { // all at one instant
		clear(l.seen)
	}
}
