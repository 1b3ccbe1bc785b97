package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/seine-cni/seine/core/agent"
)

const (
	defaultConfigPath     = `C:\ProgramData\Seine\seine-agent.yaml`
	defaultServiceLogFile = `C:\ProgramData\Seine\log\seine-agent.log`
)

// underSCM reports whether the Service Control Manager started this process.
func underSCM() bool { return !service.Interactive() }

// serve runs p as the seine-agent service until the SCM stops it. When
// p.Start fails the SCM records the service as stopped with an error.
func serve(p *program) error {
	s, err := service.New(p, &service.Config{Name: serviceName})
	if err != nil {
		return fmt.Errorf("service manager: %w", err)
	}
	if err := s.Run(); err != nil {
		if l, lerr := s.SystemLogger(nil); lerr == nil {
			_ = l.Error("seine-agent stopped: ", err.Error()) // the event log, best effort
		}
		return err
	}
	return nil
}

// hnsService is the Host Network Service, which every Windows node needs:
// the backend creates its network and endpoints through it.
const hnsService = "hns"

// preflight checks the Host Network Service exists before the agent waits
// for Open vSwitch and the API server, so a node without it (no Containers
// feature, or Wine) fails at once with the reason instead of retrying
// forever.
func preflight(*agent.Config) error {
	m, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return fmt.Errorf("open the service manager: %w", err)
	}
	defer windows.CloseServiceHandle(m)
	name, err := windows.UTF16PtrFromString(hnsService)
	if err != nil {
		return err
	}
	h, err := windows.OpenService(m, name, windows.SERVICE_QUERY_STATUS)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return fmt.Errorf("the Host Network Service (%s) is not installed: enable the Containers feature (Install-WindowsFeature Containers) and reboot: %w", hnsService, err)
	}
	if err != nil {
		return fmt.Errorf("the Host Network Service (%s): %w", hnsService, err)
	}
	windows.CloseServiceHandle(h)
	return nil
}

// setRecovery makes the SCM restart the agent when its process fails (it
// exits with 1 when the agent fails after starting). A start refused by
// preflight or a bad configuration stops the service and stays stopped:
// restarting cannot fix it. `seine-agent install` and the MSI (whose WiX
// compiler, wixl, has no ServiceConfig element) both call it.
func setRecovery() error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service recovery actions: %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return fmt.Errorf("service recovery actions: open %s: %w", serviceName, err)
	}
	defer s.Close()
	delay := restartDelaySeconds * time.Second
	actions := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: delay},
		{Type: mgr.ServiceRestart, Delay: delay},
		{Type: mgr.ServiceRestart, Delay: 6 * delay},
	}
	if err := s.SetRecoveryActions(actions, failureResetSeconds); err != nil {
		return fmt.Errorf("service recovery actions: %w", err)
	}
	return nil
}
