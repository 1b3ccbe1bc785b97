package image

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// SeineRepository is where Seine's image is published.
const SeineRepository = "ghcr.io/seine-cni/seine"

// Programs Seine's image carries in /usr/local/bin.
var SeinePrograms = []string{"seine-agent", "seine-cni", "seine-controller", "seinectl"}

// OVSRepository is where the Open vSwitch image (the seine-ovs DaemonSet)
// is published.
const OVSRepository = "ghcr.io/seine-cni/seine-ovs"

// ovsTools are the Open vSwitch tools a person debugging a node runs in
// Seine's agent container (kubectl exec ... -- ovs-ofctl dump-flows br-int),
// from Debian's openvswitch-common.
var ovsTools = []string{"/usr/bin/ovs-vsctl", "/usr/bin/ovs-ofctl", "/usr/bin/ovs-appctl", "/usr/bin/ovs-dpctl"}

// ovsPrograms are Open vSwitch's daemons and tools, from Debian's
// openvswitch-switch and openvswitch-common: the OVS image.
var ovsPrograms = append([]string{
	"/usr/sbin/ovs-vswitchd", "/usr/sbin/ovsdb-server",
	"/usr/bin/ovsdb-tool", "/usr/bin/ovsdb-client",
}, ovsTools...)

// iptablesPrograms are what the agent runs (linux/iptables_linux.go) and
// what a person debugging a node expects; they resolve through Debian's
// alternatives to the same xtables multi-call binary the machine uses.
var iptablesPrograms = []string{
	"/usr/sbin/iptables", "/usr/sbin/iptables-save", "/usr/sbin/iptables-restore",
	"/usr/sbin/ip6tables", "/usr/sbin/ip6tables-save", "/usr/sbin/ip6tables-restore",
}

// StartOVS is the ovs container's program: it creates the node's Open
// vSwitch database on first start (upgrading its schema on later ones),
// runs ovsdb-server in the background and ovs-vswitchd in the foreground, so
// the container lives as long as the switch. Paths are OVS's defaults, the
// ones the agent's configuration names: the database in
// /var/lib/openvswitch, sockets and pidfiles in /var/run/openvswitch.
const StartOVS = `#!/bin/sh
# start-ovs: Open vSwitch's userspace daemons for one node (Seine's ovs container).
set -eu
schema=/usr/share/openvswitch/vswitch.ovsschema
db=/var/lib/openvswitch/conf.db
run=/var/run/openvswitch
mkdir -p /var/lib/openvswitch "$run" /var/log/openvswitch
if [ ! -s "$db" ]; then
	ovsdb-tool create "$db" "$schema"
elif [ "$(ovsdb-tool needs-conversion "$db" "$schema")" = yes ]; then
	ovsdb-tool convert "$db" "$schema"
fi
# A previous container's daemons are gone; their pidfiles and sockets are not.
rm -f "$run"/ovsdb-server.pid "$run"/ovs-vswitchd.pid "$run"/db.sock
ovsdb-server "$db" --remote=punix:"$run"/db.sock --pidfile --detach \
	--log-file=/var/log/openvswitch/ovsdb-server.log -vconsole:off
ovs-vsctl --no-wait init
# What ovs-ctl records at start: the versions of the switch and its schema
# (the agent's inventory and support bundles read them).
ovs-vsctl --no-wait set Open_vSwitch . \
	ovs_version="$(ovs-vswitchd --version | sed -n '1s/.* //p')" \
	db_version="$(ovsdb-tool schema-version "$schema")"
ovs-vswitchd unix:"$run"/db.sock --pidfile -vconsole:info -vsyslog:off \
	--log-file=/var/log/openvswitch/ovs-vswitchd.log &
vswitchd=$!
# The runtime signals this shell only: pass SIGTERM on, then stop the database.
trap 'kill -TERM $vswitchd' TERM INT
wait $vswitchd || wait $vswitchd || true
ovs-appctl -t ovsdb-server exit || true
`

// Seine returns Seine's image: seine-agent, seine-cni, seine-controller and
// seinectl from binDir (built for linux/amd64) in /usr/local/bin; iptables
// (nft) and Open vSwitch's tools with the shared libraries they load, taken
// from this machine's Debian packages; busybox for a shell. Open vSwitch's
// daemons are in the OVS image. name is the full reference.
func Seine(name, binDir string) (*Image, error) {
	base, err := Base()
	if err != nil {
		return nil, err
	}
	bb, err := Busybox()
	if err != nil {
		return nil, err
	}
	progs := append(append([]string{}, ovsTools...), iptablesPrograms...)
	// iptables opens its match and target extensions with dlopen.
	ext, err := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	if err != nil || len(ext) == 0 {
		return nil, fmt.Errorf("iptables extensions in /usr/lib/x86_64-linux-gnu/xtables: none found (apt-get install iptables)")
	}
	libs, err := Closure(append(progs, ext...)...)
	if err != nil {
		return nil, fmt.Errorf("seine image: %w (apt-get install openvswitch-common iptables)", err)
	}
	var own []File
	for _, p := range SeinePrograms {
		own = append(own, File{Path: "/usr/local/bin/" + p, Src: filepath.Join(binDir, p)})
	}
	return &Image{
		Name: name,
		// Two layers: what changes with every build of Seine last.
		Layers:     [][]File{Merge(base, bb, libs), own},
		Entrypoint: []string{"/usr/local/bin/seine-agent"},
		Env:        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":  "seine",
			"org.opencontainers.image.source": "https://github.com/seine-cni/seine",
			"io.seine.debian-packages":        debianVersions("openvswitch-common", "iptables", "busybox-static"),
		},
	}, nil
}

// OVSTag is the tag of the OVS image built on this machine: the version of
// Debian's openvswitch-switch package, with the characters a tag may not
// hold replaced ("3.1.0-2+deb12u1" is "3.1.0-2-deb12u1").
func OVSTag() (string, error) {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "openvswitch-switch").Output()
	if err != nil || len(out) == 0 {
		return "", fmt.Errorf("the version of openvswitch-switch: %v (apt-get install openvswitch-switch)", err)
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, strings.TrimSpace(string(out))), nil
}

// OVS returns the image of the seine-ovs DaemonSet: Open vSwitch's
// userspace daemons and tools with their libraries, the database schema,
// start-ovs (its program) and busybox for start-ovs's shell. It holds
// nothing of Seine's, so it changes only with Open vSwitch.
func OVS(name string) (*Image, error) {
	base, err := Base()
	if err != nil {
		return nil, err
	}
	bb, err := Busybox()
	if err != nil {
		return nil, err
	}
	libs, err := Closure(ovsPrograms...)
	if err != nil {
		return nil, fmt.Errorf("ovs image: %w (apt-get install openvswitch-switch)", err)
	}
	own := []File{
		{Path: "/usr/local/bin/start-ovs", Data: []byte(StartOVS), Mode: 0o755},
		{Path: "/usr/share/openvswitch/vswitch.ovsschema", Src: "/usr/share/openvswitch/vswitch.ovsschema"},
		{Path: "/var/lib/openvswitch", Dir: true},
		{Path: "/var/log/openvswitch", Dir: true},
	}
	return &Image{
		Name:       name,
		Layers:     [][]File{Merge(base, bb, libs, own)},
		Entrypoint: []string{"/usr/local/bin/start-ovs"},
		Env:        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":  "seine-ovs",
			"org.opencontainers.image.source": "https://github.com/seine-cni/seine",
			"io.seine.debian-packages":        debianVersions("openvswitch-switch", "openvswitch-common", "busybox-static"),
		},
	}, nil
}

// debianVersions reports the installed versions of packages as
// "name=version ..." (for the image's labels).
func debianVersions(pkgs ...string) string {
	out, err := exec.Command("dpkg-query", append([]string{"-W", "-f", "${Package}=${Version} "}, pkgs...)...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
