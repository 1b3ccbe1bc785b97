package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/seine-cni/seine/core/agent"
)

const (
	defaultConfigPath     = `C:\ProgramData\Seine\seine-agent.yaml`
	defaultServiceLogFile = `C:\ProgramData\Seine\logs\seine-agent.log`
)

// servicePlatform is the service manager `install` and the others work with.
const servicePlatform = "windows-service"

// scmService: the service's command line says --service.
const scmService = true

// underSCM reports whether the Service Control Manager started this
// process: --service says so; without it, kardianos/service's guess (the
// parent is services.exe in session 0), which Wine, running everything in
// session 1, never meets.
func underSCM(flag bool) bool { return flag || !service.Interactive() }

// serve runs p as the seine-agent service until the SCM stops it. When
// p.Start fails the service stops at once with exit code 1 and the reason in
// the log; a failing Stop ends it with exit code 2.
func serve(p *program) error {
	h := &handler{p: p}
	if err := svc.Run(serviceName, h); err != nil {
		return fmt.Errorf("run as the %s service: %w", serviceName, err)
	}
	if h.err != nil {
		eventLog(h.err)
	}
	return h.err
}

// handler is the program as an x/sys/windows/svc Handler. kardianos/service
// would run it too, but only when its own guess of underSCM holds.
type handler struct {
	p   *program
	err error
}

func (h *handler) Execute(_ []string, r <-chan svc.ChangeRequest, changes chan<- svc.Status) (bool, uint32) {
	changes <- svc.Status{State: svc.StartPending}
	if err := h.p.Start(); err != nil {
		h.err = err
		return true, 1
	}
	changes <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for c := range r {
		switch c.Cmd {
		case svc.Interrogate:
			changes <- c.CurrentStatus
		case svc.Stop, svc.Shutdown:
			changes <- svc.Status{State: svc.StopPending}
			if err := h.p.Stop(); err != nil {
				h.err = err
				return true, 2
			}
			return false, 0
		}
	}
	return false, 0
}

// eventLog writes err to the Application event log, best effort: the log
// file has it anyway.
func eventLog(err error) {
	l, lerr := eventlog.Open(serviceName)
	if lerr != nil {
		return
	}
	defer l.Close()
	_ = l.Error(1, "seine-agent stopped: "+err.Error())
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
