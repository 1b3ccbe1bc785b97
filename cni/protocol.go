// Package cni holds what the seine-cni plugin and the agent's CNI server share:
// the request/response protocol between them (JSON over HTTP/1.1 on a local
// unix socket), the plugin's network configuration, the client the plugin
// uses, and the spool of DEL requests deferred while the agent was down.
//
// See README.md for the protocol and the CNI error codes Seine returns.
package cni

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// ProtocolVersion prefixes every request path. A plugin and an agent that do
// not share it fail with a message saying so instead of misreading each other.
const ProtocolVersion = "v1"

// Command is a CNI command forwarded to the agent.
type Command string

// The commands the agent serves. VERSION is answered by the plugin alone.
const (
	CmdAdd    Command = "ADD"
	CmdDel    Command = "DEL"
	CmdCheck  Command = "CHECK"
	CmdStatus Command = "STATUS"
	CmdGC     Command = "GC"
)

// Commands lists the commands in a stable order.
var Commands = []Command{CmdAdd, CmdDel, CmdCheck, CmdStatus, CmdGC}

// Path is the HTTP path for a command, e.g. "/v1/add".
func (c Command) Path() string {
	return "/" + ProtocolVersion + "/" + strings.ToLower(string(c))
}

// K8sArgs are the Kubernetes fields a kubelet-driven runtime passes in CNI_ARGS.
type K8sArgs struct {
	PodNamespace        string `json:"podNamespace,omitempty"`
	PodName             string `json:"podName,omitempty"`
	PodUID              string `json:"podUID,omitempty"`
	PodInfraContainerID string `json:"podInfraContainerID,omitempty"`
}

// Attachment names one (container ID, interface) pair, as in a GC request's
// list of attachments the runtime still considers valid.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// Request is what the plugin sends the agent for one CNI invocation.
type Request struct {
	Command     Command `json:"command"`
	ContainerID string  `json:"containerID,omitempty"`
	Netns       string  `json:"netns,omitempty"`
	IfName      string  `json:"ifName,omitempty"`
	// Args is CNI_ARGS verbatim; K8s holds the fields parsed from it.
	Args string  `json:"args,omitempty"`
	K8s  K8sArgs `json:"k8s"`
	// Path is CNI_PATH.
	Path string `json:"path,omitempty"`
	// CNIVersion is the cniVersion of Config, the version the runtime wants
	// its result in. The agent always answers in ResultVersion.
	CNIVersion string `json:"cniVersion"`
	// Config is the network configuration exactly as read from stdin.
	Config json.RawMessage `json:"config"`
	// ValidAttachments is set for GC only.
	ValidAttachments []Attachment `json:"validAttachments,omitempty"`
	// TimeoutMillis is how long the plugin waits for the answer; the server
	// gives the handler a little less so its error reaches the plugin.
	TimeoutMillis int64 `json:"timeoutMillis,omitempty"`

	// NetConf is Config parsed. The server fills it in; it is not sent.
	NetConf *NetConf `json:"-"`
}

// ResultVersion is the CNI version of every result the agent returns; the
// plugin converts it to the version the runtime asked for.
const ResultVersion = "1.1.0"

// Response is the agent's answer: a result (ADD only) or a CNI error.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// ParseK8sArgs extracts the Kubernetes fields from CNI_ARGS
// ("K1=V1;K2=V2"). Unknown keys are ignored, as kubelet-driven runtimes mix
// in their own (IgnoreUnknown=1). A pair without "=" is an error.
func ParseK8sArgs(args string) (K8sArgs, error) {
	var k K8sArgs
	if args == "" {
		return k, nil
	}
	for _, pair := range strings.Split(args, ";") {
		if pair == "" {
			continue
		}
		key, val, ok := strings.Cut(pair, "=")
		if !ok {
			return K8sArgs{}, fmt.Errorf("CNI_ARGS entry %q is not KEY=VALUE", pair)
		}
		switch key {
		case "K8S_POD_NAMESPACE":
			k.PodNamespace = val
		case "K8S_POD_NAME":
			k.PodName = val
		case "K8S_POD_UID":
			k.PodUID = val
		case "K8S_POD_INFRA_CONTAINER_ID":
			k.PodInfraContainerID = val
		}
	}
	return k, nil
}
