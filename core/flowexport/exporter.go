package flowexport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/go-ipfix/pkg/entities"
	"github.com/vmware/go-ipfix/pkg/exporter"
)

// Defaults (README.md, "Timeouts" and "Bounds").
const (
	DefaultPollInterval    = 5 * time.Second
	DefaultActiveTimeout   = 30 * time.Second
	DefaultIdleTimeout     = 15 * time.Second
	DefaultTemplateRefresh = 60 * time.Second
	DefaultMaxConnections  = 65536
	DefaultQueueSize       = 8192
)

// TLS is the exporter's TLS client configuration (PEM contents).
type TLS struct {
	CAData, CertData, KeyData []byte
	ServerName                string
}

// Config configures one node's flow export.
type Config struct {
	// NodeName names the exporting node (its Observation Domain ID).
	NodeName string
	// Collector is host:port.
	Collector string
	// Transport is tcp, udp or tls.
	Transport string
	TLS       *TLS
	// Zero durations and sizes take the defaults.
	PollInterval, ActiveTimeout, IdleTimeout, TemplateRefresh time.Duration
	MaxConnections, QueueSize                                 int
	// RetryInterval is the first wait after a failed connection to the
	// collector (doubled up to 30 s); zero means 1 s.
	RetryInterval time.Duration
}

// Check fills in the defaults and refuses what cannot work, naming it.
func (c *Config) Check() error {
	if c.NodeName == "" {
		return errors.New("flow export: nodeName is empty")
	}
	if _, _, err := net.SplitHostPort(c.Collector); err != nil {
		return fmt.Errorf("flow export: collector %q: want host:port: %w", c.Collector, err)
	}
	switch c.Transport {
	case "tcp", "udp":
		if c.TLS != nil {
			return fmt.Errorf("flow export: TLS settings need transport tls, not %s", c.Transport)
		}
	case "tls":
		if c.TLS == nil || len(c.TLS.CAData) == 0 {
			return errors.New("flow export: transport tls needs a CA")
		}
	default:
		return fmt.Errorf("flow export: transport %q: want tcp, udp or tls", c.Transport)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	for _, d := range []*time.Duration{&c.PollInterval, &c.ActiveTimeout, &c.IdleTimeout, &c.TemplateRefresh, &c.RetryInterval} {
		if *d < 0 {
			return fmt.Errorf("flow export: negative duration %s", *d)
		}
	}
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.ActiveTimeout, DefaultActiveTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.TemplateRefresh, DefaultTemplateRefresh)
	def(&c.RetryInterval, time.Second)
	if c.ActiveTimeout < c.PollInterval || c.IdleTimeout < c.PollInterval {
		return fmt.Errorf("flow export: active (%s) and idle (%s) timeouts must not be shorter than the poll interval (%s)", c.ActiveTimeout, c.IdleTimeout, c.PollInterval)
	}
	if c.TemplateRefresh < time.Second {
		return fmt.Errorf("flow export: template refresh %s: want at least 1s", c.TemplateRefresh)
	}
	if c.MaxConnections < 0 || c.QueueSize < 0 {
		return errors.New("flow export: negative maxConnections or queueSize")
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	return nil
}

// Source is where connections come from: ConntrackSource in the agent, a
// fake in tests.
type Source interface {
	Dump(ctx context.Context) ([]Conn, error)
}

// Stats are the exporter's counters since it started.
type Stats struct {
	Polls, PollErrors   uint64
	RecordsSent         uint64
	RecordsDropped      uint64 // queue full: the oldest record was dropped
	ConnectionsDropped  uint64 // beyond MaxConnections (or MaxDenied), not tracked
	Connections         int    // followed now
	Queued              int    // records waiting for the collector
	CollectorConnected  bool
	CollectorReconnects uint64
}

// Exporter polls a Source, follows connections in a Table and sends their
// records to the collector from a bounded queue.
type Exporter struct {
	cfg   Config
	src   Source
	log   *slog.Logger
	table Table

	mu     sync.Mutex
	queue  []Record // ring of cfg.QueueSize
	head   int
	n      int
	wake   chan struct{}
	conns  int
	cdrops uint64

	polls, pollErrors, sent, dropped, reconnects atomic.Uint64
	connected                                    atomic.Bool

	// denials are the denied connections since the last poll (denied.go).
	denyMu      sync.Mutex
	denials     map[denyKey]*denied
	denyDropped uint64
}

// New checks cfg and returns an Exporter; Run starts it.
func New(cfg Config, src Source, res Resolver, log *slog.Logger) (*Exporter, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, errors.New("flow export: no connection source")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &Exporter{
		cfg: cfg, src: src, log: log,
		table: Table{Resolver: res, ActiveTimeout: cfg.ActiveTimeout, IdleTimeout: cfg.IdleTimeout, MaxConnections: cfg.MaxConnections},
		queue: make([]Record, cfg.QueueSize),
		wake:  make(chan struct{}, 1),
	}
	x.table.Emit = x.enqueue
	return x, nil
}

// Stats returns the counters.
func (x *Exporter) Stats() Stats {
	x.mu.Lock()
	s := Stats{Connections: x.conns, ConnectionsDropped: x.cdrops, Queued: x.n}
	x.mu.Unlock()
	x.denyMu.Lock()
	s.ConnectionsDropped += x.denyDropped
	x.denyMu.Unlock()
	s.Polls, s.PollErrors = x.polls.Load(), x.pollErrors.Load()
	s.RecordsSent, s.RecordsDropped = x.sent.Load(), x.dropped.Load()
	s.CollectorConnected, s.CollectorReconnects = x.connected.Load(), x.reconnects.Load()
	return s
}

// Run polls and exports until ctx ends. Records still queued then are
// lost (and were counted as neither sent nor dropped).
func (x *Exporter) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		x.sendLoop(ctx)
	}()
	t := time.NewTicker(x.cfg.PollInterval)
	defer t.Stop()
	for {
		x.Poll(ctx, time.Now())
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

// Poll runs one cycle: dump, update the table, queue the records due and
// those of the connections denied since the last poll.
func (x *Exporter) Poll(ctx context.Context, now time.Time) {
	x.polls.Add(1)
	x.enqueue(x.takeDenied())
	conns, err := x.src.Dump(ctx)
	if err != nil {
		x.pollErrors.Add(1)
		if ctx.Err() == nil {
			x.log.Warn("flow export: poll failed", "err", err)
		}
		return
	}
	recs := x.table.Update(conns, now)
	x.mu.Lock()
	x.conns, x.cdrops = x.table.Len(), x.table.Dropped
	x.mu.Unlock()
	x.enqueue(recs)
}

func (x *Exporter) enqueue(recs []Record) {
	if len(recs) == 0 {
		return
	}
	x.mu.Lock()
	for _, r := range recs {
		if x.n == len(x.queue) { // full: drop the oldest
			x.head = (x.head + 1) % len(x.queue)
			x.n--
			x.dropped.Add(1)
		}
		x.queue[(x.head+x.n)%len(x.queue)] = r
		x.n++
	}
	x.mu.Unlock()
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// take moves up to max records from the front of the queue into buf,
// which it returns.
func (x *Exporter) take(max int, buf []Record) []Record {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := min(max, x.n)
	out := slices.Grow(buf[:0], k)[:k]
	for i := range out {
		out[i] = x.queue[(x.head+i)%len(x.queue)]
	}
	x.head = (x.head + k) % len(x.queue)
	x.n -= k
	return out
}

// putBack returns unsent records to the front of the queue, as far as
// there is room; what does not fit is dropped and counted.
func (x *Exporter) putBack(recs []Record) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := len(recs) - 1; i >= 0; i-- {
		if x.n == len(x.queue) {
			x.dropped.Add(uint64(i + 1))
			return
		}
		x.head = (x.head - 1 + len(x.queue)) % len(x.queue)
		x.queue[x.head] = recs[i]
		x.n++
	}
}

// sender is what sendLoop needs of go-ipfix's exporting process.
type sender interface {
	SendSet(entities.Set) (int, error)
	SendDataRecords(templateID uint16, records []entities.Record, buf *bytes.Buffer) (int, int, error)
	CloseConnToCollector()
}

func (x *Exporter) dial() (sender, error) {
	in := exporter.ExporterInput{
		CollectorAddress:    x.cfg.Collector,
		CollectorProtocol:   x.cfg.Transport,
		ObservationDomainID: ObservationDomainID(x.cfg.NodeName),
		TempRefTimeout:      uint32(x.cfg.TemplateRefresh / time.Second),
		// go-ipfix closes a TCP connection the collector closed when it
		// next looks (default every 10 s); records written before that
		// are lost (IPFIX has no acknowledgements), so look often: a
		// read with a 1 ms deadline every checkConnInterval.
		CheckConnInterval: checkConnInterval,
	}
	if x.cfg.Transport == "tls" {
		in.CollectorProtocol = "tcp"
		in.TLSClientConfig = &exporter.ExporterTLSClientConfig{
			ServerName: x.cfg.TLS.ServerName, CAData: x.cfg.TLS.CAData,
			CertData: x.cfg.TLS.CertData, KeyData: x.cfg.TLS.KeyData,
		}
	}
	ep, err := exporter.InitExportingProcess(in)
	if err != nil {
		return nil, err
	}
	for _, id := range []uint16{TemplateIPv4, TemplateIPv6} {
		set, err := templateSet(id)
		if err == nil {
			_, err = ep.SendSet(set)
		}
		if err != nil {
			ep.CloseConnToCollector()
			return nil, fmt.Errorf("send template %d: %w", id, err)
		}
	}
	return ep, nil
}

const batchSize = 512

// checkConnInterval is how often a TCP connection is checked for a
// collector that went away: what is written in between is lost. At 1 s a
// record exported half a second after the collector stopped was lost in
// every run of TestCollectorRestartLosesLittle; at 100 ms it arrives.
const checkConnInterval = 100 * time.Millisecond

func (x *Exporter) sendLoop(ctx context.Context) {
	var s sender
	defer func() {
		if s != nil {
			s.CloseConnToCollector()
		}
		x.connected.Store(false)
	}()
	retry := x.cfg.RetryInterval
	var buf bytes.Buffer
	var batch wireBatch
	var recs []Record
	for {
		if s == nil {
			var err error
			if s, err = x.dial(); err != nil {
				x.log.Warn("flow export: collector unreachable", "collector", x.cfg.Collector, "transport", x.cfg.Transport, "err", err, "retry", retry)
				select {
				case <-ctx.Done():
					return
				case <-time.After(retry):
				}
				retry = min(2*retry, 30*time.Second)
				continue
			}
			retry = x.cfg.RetryInterval
			if x.reconnects.Add(1) > 1 {
				x.log.Info("flow export: collector reconnected", "collector", x.cfg.Collector)
			}
			x.connected.Store(true)
		}
		recs = x.take(batchSize, recs)
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-x.wake:
			}
			continue
		}
		if err := x.send(s, recs, &buf, &batch); err != nil {
			x.log.Warn("flow export: send failed, reconnecting", "collector", x.cfg.Collector, "err", err)
			s.CloseConnToCollector()
			s = nil
			x.connected.Store(false)
		}
	}
}

// send sends recs, one data set per family; what was not sent goes back
// to the queue. w is the batch's encoding, reused from one batch to the next.
func (x *Exporter) send(s sender, recs []Record, buf *bytes.Buffer, w *wireBatch) error {
	w.reset()
	var order []uint16
	var kept []int // what was encoded, by index in recs
	for i := range recs {
		id := templateFor(&recs[i])
		if err := w.add(id, &recs[i]); err != nil { // cannot be encoded: dropped
			x.dropped.Add(1)
			x.log.Error("flow export: record not encodable", "err", err)
			continue
		}
		if !slices.Contains(order, id) {
			order = append(order, id)
		}
		kept = append(kept, i)
	}
	w.group()
	for _, id := range order {
		n, _, err := s.SendDataRecords(id, w.byID[id], buf)
		x.sent.Add(uint64(n))
		if err != nil {
			// Records of the families not yet sent and the rest of
			// this one go back, in their original order.
			var back []Record
			left := map[uint16]int{id: n}
			for _, i := range kept {
				r := recs[i]
				fid := templateFor(&r)
				if fid == id && left[id] > 0 {
					left[id]--
					continue
				}
				if fid == id || !sentFamily(order, id, fid) {
					back = append(back, r)
				}
			}
			x.putBack(back)
			return err
		}
	}
	return nil
}

// wireBatch holds a batch's records encoded by appendRecord, in one
// buffer, grouped by template.
type wireBatch struct {
	enc   []byte
	wires []wireRecord
	byID  map[uint16][]entities.Record
}

func (w *wireBatch) reset() {
	w.enc, w.wires = w.enc[:0], w.wires[:0]
	if w.byID == nil {
		w.byID = map[uint16][]entities.Record{}
	}
	for id, l := range w.byID {
		w.byID[id] = l[:0]
	}
}

// add encodes r with template id. A record appendRecord refuses leaves
// nothing behind.
func (w *wireBatch) add(id uint16, r *Record) error {
	n := len(w.enc)
	enc, err := appendRecord(w.enc, r)
	if err != nil {
		w.enc = enc[:n]
		return err
	}
	// When append moves enc, the records before keep the old array,
	// which still holds their bytes.
	w.enc = enc
	w.wires = append(w.wires, wireRecord{id: id, enc: enc[n:len(enc):len(enc)]})
	return nil
}

// group lists the records added, by template, in byID.
func (w *wireBatch) group() {
	for i := range w.wires {
		id := w.wires[i].id
		w.byID[id] = append(w.byID[id], &w.wires[i])
	}
}

// sentFamily reports whether family fid was sent before cur in order.
func sentFamily(order []uint16, cur, fid uint16) bool {
	for _, id := range order {
		if id == cur {
			return false
		}
		if id == fid {
			return true
		}
	}
	return false
}
