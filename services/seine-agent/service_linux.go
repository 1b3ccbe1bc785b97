package main

import (
	"errors"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/platform"
)

const (
	defaultConfigPath = "/etc/seine/seine-agent.yaml"
	// systemd sends the agent's stderr to the journal.
	defaultServiceLogFile = ""
)

// servicePlatform is the service manager `install` and the others work with.
const servicePlatform = "linux-systemd"

// scmService: systemd runs `seine-agent run` as a plain foreground process.
const scmService = false

func underSCM(flag bool) bool { return flag }

func serve(*program) error {
	return errors.New("--service: there is no Windows service manager on this OS")
}

// preflight: the Linux backend checks what it needs as it sets the node up.
func preflight(*agent.Config) error { return nil }

// setRecovery: the systemd unit has Restart=on-failure.
func setRecovery() error {
	return platform.NotSupported("service recovery actions (systemd restarts the agent itself)")
}
