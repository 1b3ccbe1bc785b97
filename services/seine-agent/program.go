package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/seine-cni/seine/core/agent"
)

// stopTimeout bounds how long Stop waits for the agent to return; the
// Windows SCM kills a service that takes much longer (20 s by default).
const stopTimeout = 15 * time.Second

// program is the agent as a service: Start prepares
// synchronously (configuration, host checks) so that a node that cannot run
// the agent makes the service stop with that error at once, then runs the
// agent in the background until Stop.
type program struct {
	log     *slog.Logger
	prepare func() (*agent.Config, error)
	run     func(ctx context.Context, log *slog.Logger, cfg *agent.Config) error
	// exit is called when the agent returns on its own, without Stop: the
	// process must end so the service manager sees the failure.
	exit func(err error)

	cancel context.CancelFunc
	done   chan struct{}
	err    error // the agent's result, set before done closes
}

func (p *program) Start() error {
	cfg, err := p.prepare()
	if err != nil {
		p.log.Error("seine-agent cannot start", "err", err)
		return err
	}
	log := p.log.With("node", cfg.NodeName)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	log.Info("seine-agent service starting")
	go func() {
		err := p.run(ctx, log, cfg)
		stopped := ctx.Err() != nil
		if err == nil && !stopped {
			err = errors.New("the agent returned without being stopped")
		}
		p.err = err
		close(p.done)
		if !stopped {
			p.exit(err)
		}
	}()
	return nil
}

func (p *program) Stop() error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		return fmt.Errorf("the agent did not stop within %s", stopTimeout)
	}
	if p.err != nil && !errors.Is(p.err, context.Canceled) {
		return p.err
	}
	p.log.Info("seine-agent service stopped")
	return nil
}
