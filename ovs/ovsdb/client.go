// Package ovsdb is Seine's client of the Open_vSwitch database: typed models,
// a monitored cache, and idempotent, transactional operations on bridges and
// ports. It is built on github.com/ovn-org/libovsdb; see README.md.
package ovsdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/ovn-org/libovsdb/cache"
	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"
	"github.com/prometheus/client_golang/prometheus"
)

// Sentinel errors; test with errors.Is.
var (
	ErrBridgeNotFound = errors.New("bridge not found")
	ErrPortNotFound   = errors.New("port not found")
	ErrNoRootRow      = errors.New("no Open_vSwitch row (database not initialised: ovs-vsctl --no-wait init)")
)

// Config says where the database is and how to talk to it.
type Config struct {
	// Endpoint is the OVSDB endpoint in OVS syntax: "unix:/run/openvswitch/db.sock"
	// or "tcp:127.0.0.1:6640". See ParseEndpoint.
	Endpoint string
	// Logger receives libovsdb's logs and the client's own; nil discards them.
	Logger *slog.Logger
	// InactivityProbe is how long an idle connection waits before sending an echo;
	// a failed echo triggers a reconnect. Zero means 15s.
	InactivityProbe time.Duration
	// ReconnectMaxInterval caps the backoff between reconnect attempts. Zero means 2s.
	ReconnectMaxInterval time.Duration
	// NoWait makes writes return once the database committed them, without
	// waiting for ovs-vswitchd to apply them (ovs-vsctl --no-wait). By default
	// each write bumps next_cfg and waits until ovs-vswitchd reports it in
	// cur_cfg, so a bridge exists in ovs-vswitchd (and has its management
	// socket) when EnsureBridge returns.
	NoWait bool
	// Metrics, when set, receives libovsdb's metrics (disconnects, monitor
	// updates) named <MetricsNamespace>_<MetricsSubsystem>_... . A client
	// made again after a failed Connect replaces the metrics of the one
	// before.
	Metrics                            prometheus.Registerer
	MetricsNamespace, MetricsSubsystem string
}

// Client is a connected, monitoring OVSDB client. It reconnects by itself;
// operations issued while disconnected wait for the reconnection (or ctx).
// Its methods are safe for concurrent use.
type Client struct {
	ovs    client.Client
	log    *slog.Logger
	change *broadcaster
	noWait bool
	txns   atomic.Int64 // transactions sent, so tests can check idempotency
	// stopTransport ends what openTransport started (the Windows pipe relay).
	stopTransport func()
}

// Connect dials cfg.Endpoint, checks the server's schema against the models,
// and monitors the Open_vSwitch, Bridge, Port and Interface tables. It returns
// once the cache holds the initial contents. The first connection is not
// retried (a caller starting before OVS retries Connect); after it, the client
// reconnects by itself for as long as it is open.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ep, err := ParseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	dbModel, err := ClientDBModel()
	if err != nil {
		return nil, fmt.Errorf("ovsdb model: %w", err)
	}
	// The address libovsdb dials: ep itself, or a loopback relay to it.
	addr, stopTransport, err := openTransport(ep, log)
	if err != nil {
		return nil, fmt.Errorf("ovsdb endpoint %s: %w", cfg.Endpoint, err)
	}
	ok := false
	defer func() {
		if !ok {
			stopTransport()
		}
	}()
	probe := cfg.InactivityProbe
	if probe == 0 {
		probe = 15 * time.Second
	}
	maxInterval := cfg.ReconnectMaxInterval
	if maxInterval == 0 {
		maxInterval = 2 * time.Second
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 20 * time.Millisecond
	bo.MaxInterval = maxInterval
	bo.MaxElapsedTime = 0 // retry forever; callers bound their operations with ctx
	lr := logr.FromSlogHandler(log.With("component", "libovsdb").Handler())
	opts := []client.Option{
		client.WithEndpoint(addr),
		client.WithLogger(&lr),
		client.WithInactivityCheck(probe, 5*time.Second, bo),
	}
	if cfg.Metrics != nil {
		opts = append(opts, client.WithMetricsRegistryNamespaceSubsystem(replacing{cfg.Metrics}, cfg.MetricsNamespace, cfg.MetricsSubsystem))
	}
	ovs, err := client.NewOVSDBClient(dbModel, opts...)
	if err != nil {
		return nil, fmt.Errorf("ovsdb client for %s: %w", cfg.Endpoint, err)
	}
	if err := ovs.Connect(ctx); err != nil {
		return nil, fmt.Errorf("connect to ovsdb %s: %w", cfg.Endpoint, err)
	}
	c := &Client{ovs: ovs, log: log, change: newBroadcaster(), noWait: cfg.NoWait, stopTransport: stopTransport}
	notify := func(string, model.Model) { c.change.notify() }
	ovs.Cache().AddEventHandler(&cache.EventHandlerFuncs{
		AddFunc:    notify,
		DeleteFunc: notify,
		UpdateFunc: func(string, model.Model, model.Model) { c.change.notify() },
	})
	// Monitor exactly the mapped columns: without a column list the server
	// sends every column, and libovsdb's cache rejects rows with columns the
	// model lacks.
	var tables []client.MonitorOption
	for _, m := range []model.Model{&OpenvSwitch{}, &Bridge{}, &Port{}, &Interface{}} {
		tables = append(tables, client.WithTable(m, modelFields(m)...))
	}
	_, err = ovs.Monitor(ctx, ovs.NewMonitor(tables...))
	if err != nil {
		ovs.Close()
		return nil, fmt.Errorf("monitor ovsdb %s: %w", cfg.Endpoint, err)
	}
	log.Debug("connected to ovsdb", "endpoint", cfg.Endpoint, "via", addr)
	ok = true
	return c, nil
}

// Close disconnects and stops reconnecting.
func (c *Client) Close() {
	c.ovs.Close()
	c.stopTransport()
}

// Connected reports whether the connection is currently up.
func (c *Client) Connected() bool { return c.ovs.Connected() }

// Version returns OVS's version (the ovs_version column ovs-vswitchd fills in).
func (c *Client) Version(ctx context.Context) (string, error) {
	root, err := c.root(ctx)
	if err != nil {
		return "", err
	}
	if root.OVSVersion == nil || *root.OVSVersion == "" {
		return "", errors.New("ovs_version is not set (ovs-vswitchd has not connected to the database)")
	}
	return *root.OVSVersion, nil
}

func (c *Client) root(ctx context.Context) (*OpenvSwitch, error) {
	var rows []OpenvSwitch
	if err := c.ovs.List(ctx, &rows); err != nil {
		return nil, fmt.Errorf("read Open_vSwitch: %w", err)
	}
	if len(rows) == 0 {
		return nil, ErrNoRootRow
	}
	return &rows[0], nil
}

// modelFields returns pointers to every mapped field of the model m (a
// pointer to a struct) except _uuid, as libovsdb's WithTable expects.
func modelFields(m model.Model) []any {
	v := reflect.ValueOf(m).Elem()
	var fields []any
	for i := range v.NumField() {
		if tag := v.Type().Field(i).Tag.Get("ovsdb"); tag != "" && tag != "_uuid" {
			fields = append(fields, v.Field(i).Addr().Interface())
		}
	}
	return fields
}

// transact runs ops as one transaction and turns any per-operation or commit
// error into a Go error that keeps OVSDB's details. Unless NoWait is set it
// also increments next_cfg in the same transaction and waits until
// ovs-vswitchd has applied it (cur_cfg), like ovs-vsctl.
func (c *Client) transact(ctx context.Context, what string, ops []ovsdb.Operation) ([]ovsdb.OperationResult, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	nextCfgAt := -1
	if !c.noWait {
		root, err := c.root(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		m := &OpenvSwitch{UUID: root.UUID}
		inc, err := c.ovs.Where(m).Mutate(m, model.Mutation{Field: &m.NextCfg, Mutator: ovsdb.MutateOperationAdd, Value: 1})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		ops = append(slices.Clip(ops), inc...)
		ops = append(ops, ovsdb.Operation{
			Op:      ovsdb.OperationSelect,
			Table:   OpenvSwitchTable,
			Where:   []ovsdb.Condition{ovsdb.NewCondition("_uuid", ovsdb.ConditionEqual, ovsdb.UUID{GoUUID: root.UUID})},
			Columns: []string{"next_cfg"},
		})
		nextCfgAt = len(ops) - 1
	}
	c.txns.Add(1)
	res, err := c.ovs.Transact(ctx, ops...)
	if err != nil {
		return nil, fmt.Errorf("%s: transact: %w", what, err)
	}
	opErrs, err := ovsdb.CheckOperationResults(res, ops)
	if err != nil {
		errs := make([]error, 0, len(opErrs)+1)
		for _, e := range opErrs {
			errs = append(errs, e)
		}
		if len(errs) == 0 {
			errs = append(errs, err)
		}
		return nil, fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	c.log.Debug("ovsdb transaction", "what", what, "ops", len(ops))
	if nextCfgAt >= 0 {
		target, err := selectedInt(res[nextCfgAt], "next_cfg")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		err = c.waitFor(ctx, "ovs-vswitchd to apply "+what, func() (bool, error) {
			root, err := c.root(ctx)
			return err == nil && root.CurCfg >= target, nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w (is ovs-vswitchd running?)", what, err)
		}
	}
	return res, nil
}

// selectedInt reads an integer column from a one-row select result.
func selectedInt(r ovsdb.OperationResult, col string) (int, error) {
	if len(r.Rows) != 1 {
		return 0, fmt.Errorf("select %s: %d rows", col, len(r.Rows))
	}
	switch v := r.Rows[0][col].(type) {
	case float64:
		return int(v), nil
	case int:
		return v, nil
	default:
		return 0, fmt.Errorf("select %s: unexpected value %T(%v)", col, v, v)
	}
}

// isConstraintViolation reports whether err is OVSDB's "constraint violation",
// which an insert gets when another client created a row with the same indexed
// name first.
func isConstraintViolation(err error) bool {
	var cv *ovsdb.ConstraintViolation
	return errors.As(err, &cv) || (err != nil && strings.Contains(err.Error(), "constraint violation"))
}

// waitFor re-evaluates cond whenever the cache changes until it returns true or
// an error, or ctx ends. It is how a write waits to see itself in the cache
// (the monitor update may arrive after the transaction reply) and how
// PortOfport waits for ovs-vswitchd.
func (c *Client) waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	for {
		changed := c.change.wait()
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		}
	}
}

// broadcaster wakes every waiter on each cache change.
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcaster() *broadcaster { return &broadcaster{ch: make(chan struct{})} }

func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

// replacing registers collectors in place of those already registered
// under the same names: libovsdb registers (MustRegister) for every client
// it makes, and the client that counts is the last.
type replacing struct{ prometheus.Registerer }

func (r replacing) Register(c prometheus.Collector) error {
	if neverCounted(c) {
		return nil
	}
	err := r.Registerer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		r.Registerer.Unregister(are.ExistingCollector)
		return r.Registerer.Register(c)
	}
	return err
}

// neverCounted reports libovsdb's update counters: it counts only the
// legacy "update" notifications, and the monitors it starts get "update2"
// or "update3" from every OVS of this decade, so they would be metrics
// that never have a series.
func neverCounted(c prometheus.Collector) bool {
	ch := make(chan *prometheus.Desc, 8)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	never := false
	for d := range ch {
		s := d.String()
		never = never || strings.Contains(s, `_update_messages_total"`) || strings.Contains(s, `_table_updates_total"`)
	}
	return never
}

func (r replacing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
