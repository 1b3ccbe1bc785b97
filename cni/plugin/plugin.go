// Package plugin is seine-cni: the CNI plugin a container runtime execs. It
// validates the network configuration, forwards the command to the local
// seine-agent over its socket and converts the agent's answer to the CNI
// version the runtime asked for. It holds no other logic; see ../README.md.
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/seine-cni/seine/cni"
)

// Main runs the plugin for one invocation and exits, as skel does.
func Main(about string) {
	p := &Plugin{Stdout: os.Stdout}
	skel.PluginMainFuncs(p.Funcs(), VersionInfo(), about)
}

// VersionInfo is what VERSION reports.
func VersionInfo() version.PluginInfo {
	return version.PluginSupports(cni.SupportedVersions...)
}

// Plugin implements the CNI commands on top of the agent client.
type Plugin struct {
	// Stdout receives the ADD result.
	Stdout io.Writer
	// Installed reports whether the plugin is still installed; nil means
	// its executable is still at the path it was started from
	// (executableInPlace).
	Installed func() bool
}

func (p *Plugin) installed() bool {
	if p.Installed != nil {
		return p.Installed()
	}
	return executableInPlace()
}

// executableInPlace reports whether this process's executable is still at
// its path. It is not while Seine is uninstalled: seinectl node-cleanup
// removes the plugin before the DEL spool. When it cannot tell, it says
// yes (a DEL is kept rather than dropped).
func executableInPlace() bool {
	exe, err := os.Executable() // on Linux without /proc's " (deleted)"
	if err != nil {
		return true
	}
	_, err = os.Stat(exe)
	return !errors.Is(err, fs.ErrNotExist)
}

// Funcs returns the callbacks for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    p.cmdAdd,
		Del:    p.cmdDel,
		Check:  p.cmdCheck,
		Status: p.cmdStatus,
		GC:     p.cmdGC,
	}
}

func (p *Plugin) cmdAdd(args *skel.CmdArgs) error {
	conf, req, err := newRequest(cni.CmdAdd, args)
	if err != nil {
		return err
	}
	resp, err := callWithTimeout(conf, req)
	if err != nil {
		return err
	}
	if len(resp.Result) == 0 {
		return cni.Errorf(types.ErrInternal, "seine-agent at %s answered ADD for container %s without a result", conf.Socket(), args.ContainerID)
	}
	res, err := current.NewResult(resp.Result)
	if err != nil {
		return cni.Errorf(types.ErrDecodingFailure, "decode the result seine-agent returned for container %s: %v", args.ContainerID, err)
	}
	converted, err := res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return cni.Errorf(types.ErrIncompatibleCNIVersion, "convert the result for container %s to CNI %s: %v", args.ContainerID, conf.CNIVersion, err)
	}
	if err := converted.PrintTo(p.Stdout); err != nil {
		return cni.Errorf(types.ErrIOFailure, "write result: %v", err)
	}
	return nil
}

// cmdDel forwards DEL. When the agent is unreachable the request is spooled
// for the agent to replay at start and DEL succeeds: the runtime can finish
// tearing the sandbox down, and nothing the ADD took leaks. The plugin then
// tries the agent once more, so a DEL spooled just as the agent started
// (after it drained the spool) is still delivered; a DEL handled twice is
// harmless because DEL is idempotent.
func (p *Plugin) cmdDel(args *skel.CmdArgs) error {
	conf, req, err := newRequest(cni.CmdDel, args)
	if err != nil {
		return err
	}
	// Both attempts share the one request timeout.
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	_, err = call(ctx, conf, req)
	if !errors.Is(err, cni.ErrAgentUnreachable) {
		return err
	}
	dir := cni.PendingDelDir(conf.Socket())
	file, spoolErr := cni.SpoolDel(dir, req)
	if spoolErr != nil {
		return cni.Errorf(types.ErrTryAgainLater, "%v; could not defer the DEL either: %v", err, spoolErr)
	}
	// Spooled, then looked: node-cleanup removes the plugin, then the
	// spool. A plugin still running then finds itself removed after its
	// write, or wrote before the spool went: either way no DEL outlives
	// the uninstall (the agent that would replay it is gone for good, and
	// node-cleanup freed what the pod had). The directories the spool
	// write may have made again go too when empty.
	if !p.installed() {
		_ = cni.RemovePendingDel(file)
		_ = os.Remove(dir)
		_ = os.Remove(filepath.Dir(dir))
		return nil
	}
	req.TimeoutMillis = 0 // recomputed from what is left of ctx
	if _, err := call(ctx, conf, req); err != nil {
		if errors.Is(err, cni.ErrAgentUnreachable) {
			return nil // deferred: the agent replays it when it starts
		}
		return err
	}
	_ = cni.RemovePendingDel(file)
	return nil
}

func (p *Plugin) cmdCheck(args *skel.CmdArgs) error {
	conf, req, err := newRequest(cni.CmdCheck, args)
	if err != nil {
		return err
	}
	_, err = callWithTimeout(conf, req)
	return err
}

func (p *Plugin) cmdStatus(args *skel.CmdArgs) error {
	conf, req, err := newRequest(cni.CmdStatus, args)
	if err != nil {
		return err
	}
	_, err = callWithTimeout(conf, req)
	if errors.Is(err, cni.ErrAgentUnreachable) {
		return cni.Errorf(types.ErrPluginNotAvailable, "%v; the plugin is not available until seine-agent runs on this node (check the seine-agent pod or service)", unwrapUnreachable(err))
	}
	return err
}

// cmdGC forwards GC with the attachments the runtime still considers valid.
// A GC without the cni.dev/valid-attachments key is refused: read as "none
// is valid" it would tear down every pod on the node.
func (p *Plugin) cmdGC(args *skel.CmdArgs) error {
	conf, req, err := newRequest(cni.CmdGC, args)
	if err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(args.StdinData, &keys); err != nil {
		return cni.Errorf(types.ErrDecodingFailure, "decode network config: %v", err)
	}
	if _, ok := keys[validAttachmentsKey]; !ok {
		return cni.Errorf(types.ErrInvalidNetworkConfig, "GC without %q: refusing to treat every attachment as stale", validAttachmentsKey)
	}
	req.ValidAttachments = []cni.Attachment{}
	for _, a := range conf.ValidAttachments {
		req.ValidAttachments = append(req.ValidAttachments, cni.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	_, err = callWithTimeout(conf, req)
	return err
}

// validAttachmentsKey carries the still-valid attachments in a GC config.
const validAttachmentsKey = "cni.dev/valid-attachments"

// newRequest validates the configuration and environment into a request.
func newRequest(cmd cni.Command, args *skel.CmdArgs) (*cni.NetConf, *cni.Request, error) {
	conf, err := cni.ParseNetConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	k8s, err := cni.ParseK8sArgs(args.Args)
	if err != nil {
		return nil, nil, cni.Errorf(types.ErrInvalidEnvironmentVariables, "%v", err)
	}
	return conf, &cni.Request{
		Command:     cmd,
		ContainerID: args.ContainerID,
		Netns:       args.Netns,
		IfName:      args.IfName,
		Args:        args.Args,
		K8s:         k8s,
		Path:        args.Path,
		CNIVersion:  conf.CNIVersion,
		Config:      args.StdinData,
	}, nil
}

// callWithTimeout is call bounded by the configured request timeout.
func callWithTimeout(conf *cni.NetConf, req *cni.Request) (*cni.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	return call(ctx, conf, req)
}

// call sends req and turns every failure into a *types.Error, except that
// an unreachable agent stays matchable with errors.Is(err,
// cni.ErrAgentUnreachable) (inside a code-11 error) for DEL and STATUS.
func call(ctx context.Context, conf *cni.NetConf, req *cni.Request) (*cni.Response, error) {
	resp, err := cni.NewClient(conf.Socket()).Do(ctx, req)
	switch {
	case err == nil && resp.Error != nil:
		return nil, resp.Error
	case err == nil:
		return resp, nil
	case errors.Is(err, cni.ErrAgentUnreachable):
		return nil, &unreachable{
			cniErr: cni.Errorf(types.ErrTryAgainLater, "%v; check that seine-agent is running on this node (its pod or service) and serving that socket", err),
			err:    err,
		}
	case errors.Is(err, context.DeadlineExceeded):
		return nil, cni.Errorf(types.ErrTryAgainLater, "seine-agent at %s did not answer %s within %s; check the seine-agent log", conf.Socket(), req.Command, conf.Timeout)
	default:
		var bad *cni.BadResponseError
		if errors.As(err, &bad) {
			return nil, cni.Errorf(types.ErrDecodingFailure, "%v", err)
		}
		return nil, cni.Errorf(types.ErrIOFailure, "%v", err)
	}
}

// unreachable is the code-11 error for an unreachable agent that still
// unwraps to the transport error.
type unreachable struct {
	cniErr *types.Error
	err    error
}

func (u *unreachable) Error() string   { return u.cniErr.Error() }
func (u *unreachable) Unwrap() []error { return []error{u.cniErr, u.err} }

func unwrapUnreachable(err error) error {
	var u *unreachable
	if errors.As(err, &u) {
		return u.err
	}
	return err
}
