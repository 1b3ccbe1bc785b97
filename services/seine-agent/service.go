package main

import (
	"fmt"
	"strings"

	"github.com/kardianos/service"
)

// Windows recovery: restart the agent 10 s after a failure, and count
// failures afresh after an hour without one.
const (
	restartDelaySeconds = 10
	failureResetSeconds = 3600
)

// serviceConfig is the agent's service for kardianos/service. On Linux it
// carries Seine's own systemd unit (systemdUnit), on Windows an automatic
// start and restart on failure.
func serviceConfig(spec serviceSpec) *service.Config {
	return &service.Config{
		Name:        serviceName,
		DisplayName: "Seine node agent",
		Description: "Seine CNI: pod networking on Open vSwitch",
		Executable:  spec.Executable,
		Arguments:   spec.args(),
		Option: service.KeyValue{
			// A fully rendered unit: kardianos/service's template engine
			// leaves text without actions as it is.
			"SystemdScript":          systemdUnit(spec),
			"StartType":              "automatic",
			"OnFailure":              "restart",
			"OnFailureDelayDuration": fmt.Sprintf("%ds", restartDelaySeconds),
			"OnFailureResetPeriod":   failureResetSeconds,
		},
	}
}

// newController opens the agent's service in the OS's service manager,
// which must be the one Seine's service is made for (servicePlatform):
// kardianos/service would otherwise fall back to, say, a SysV script that
// knows nothing of restarting the agent.
func newController(spec serviceSpec) (controller, error) {
	if p := service.Platform(); p != servicePlatform {
		return nil, fmt.Errorf("the %s service needs %s; this host's service manager is %q: run `seine-agent run` under it yourself", serviceName, servicePlatform, p)
	}
	s, err := service.New(nil, serviceConfig(spec))
	if err != nil {
		return nil, fmt.Errorf("service manager: %w", err)
	}
	return s, nil
}

// systemdUnit is the agent's systemd unit: after Open vSwitch and the
// network, restarted when it fails (but not when stopped), never
// rate-limited out of restarting.
func systemdUnit(spec serviceSpec) string {
	var exec []string
	for _, a := range append([]string{spec.Executable}, spec.args()...) {
		exec = append(exec, systemdQuote(a))
	}
	return `[Unit]
Description=Seine node agent (Kubernetes CNI on Open vSwitch)
Documentation=https://github.com/seine-cni/seine
Wants=network-online.target
After=network-online.target openvswitch-switch.service ovs-vswitchd.service ovsdb-server.service
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=` + strings.Join(exec, " ") + `
Restart=on-failure
RestartSec=5
TimeoutStopSec=20
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`
}

// systemdQuote quotes one ExecStart argument: systemd splits on white space,
// unquotes "..." with C escapes and expands % specifiers and $ variables.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\n\"'\\;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}
