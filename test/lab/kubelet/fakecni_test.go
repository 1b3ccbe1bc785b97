package kubelet

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// The test binary doubles as a tiny CNI plugin: TestMain runs fakePlugin when libcni
// execs it (through a symlink named fakecni in the test's bin dir). It records every call
// to the log file named in its config and answers as the config says.

// fakeConf is the plugin's network configuration.
type fakeConf struct {
	CNIVersion string            `json:"cniVersion"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	LogFile    string            `json:"logFile"`
	IPs        map[string]string `json:"ips"`     // pod name -> CIDR to return
	FailAdd    []string          `json:"failAdd"` // pod names whose ADD fails
	// FailWhileExists makes DEL and STATUS fail while the named file exists.
	FailDelWhileExists    string          `json:"failDelWhileExists"`
	FailStatusWhileExists string          `json:"failStatusWhileExists"`
	PrevResult            json.RawMessage `json:"prevResult"`
	RuntimeConfig         json.RawMessage `json:"runtimeConfig"`
}

// fakeCall is one recorded invocation.
type fakeCall struct {
	Command       string            `json:"command"`
	ContainerID   string            `json:"containerID"`
	NetNS         string            `json:"netns"`
	IfName        string            `json:"ifName"`
	Args          map[string]string `json:"args"`
	HasPrevResult bool              `json:"hasPrevResult"`
}

func fakePlugin() int {
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		fmt.Print(`{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`)
		return 0
	}
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fakeFail("1.0.0", 100, err.Error())
	}
	var conf fakeConf
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return fakeFail("1.0.0", 6, "bad config: "+err.Error())
	}
	call := fakeCall{
		Command:       cmd,
		ContainerID:   os.Getenv("CNI_CONTAINERID"),
		NetNS:         os.Getenv("CNI_NETNS"),
		IfName:        os.Getenv("CNI_IFNAME"),
		Args:          map[string]string{},
		HasPrevResult: len(conf.PrevResult) > 0 && string(conf.PrevResult) != "null",
	}
	for _, kv := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			call.Args[k] = v
		}
	}
	if conf.LogFile != "" {
		line, _ := json.Marshal(call)
		f, err := os.OpenFile(conf.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			_, _ = f.Write(append(line, '\n')) // one small O_APPEND write: atomic
			_ = f.Close()
		}
	}
	exists := func(p string) bool { _, err := os.Stat(p); return p != "" && err == nil }
	pod := call.Args["K8S_POD_NAME"]
	switch cmd {
	case "ADD":
		if slices.Contains(conf.FailAdd, pod) {
			return fakeFail(conf.CNIVersion, 11, "no IP addresses available in range set for "+pod)
		}
		if !exists(call.NetNS) {
			return fakeFail(conf.CNIVersion, 100, "netns "+call.NetNS+" does not exist")
		}
		ip := conf.IPs[pod]
		if ip == "" {
			ip = "10.9.0.99/24"
		}
		fmt.Printf(`{"cniVersion":%q,"interfaces":[{"name":"veth-host"},{"name":%q,"sandbox":%q}],`+
			`"ips":[{"address":%q,"interface":1}]}`, conf.CNIVersion, call.IfName, call.NetNS, ip)
	case "DEL":
		if exists(conf.FailDelWhileExists) {
			return fakeFail(conf.CNIVersion, 100, "DEL failure requested by the test")
		}
	case "CHECK":
		if !call.HasPrevResult {
			return fakeFail(conf.CNIVersion, 100, "CHECK without prevResult")
		}
	case "STATUS":
		if exists(conf.FailStatusWhileExists) {
			return fakeFail(conf.CNIVersion, 50, "plugin not ready")
		}
	default:
		return fakeFail(conf.CNIVersion, 4, "unknown command "+cmd)
	}
	return 0
}

func fakeFail(version string, code int, msg string) int {
	fmt.Printf(`{"cniVersion":%q,"code":%d,"msg":%q}`, version, code, msg)
	return 1
}
