#!/bin/sh
# seine-diag.sh: diagnostics of a Seine Linux node, for an administrator or a
# support request. A thin wrapper over seinectl: it prints `seinectl check`
# and writes a support bundle with `seinectl bundle`. With -C it writes the
# whole cluster's bundle instead, with `seinectl supportbundle`.
#
# Exit status: 0 all checks passed, 1 some check failed (the bundle is written
# all the same), 2 usage error or no seinectl, 3 the bundle could not be written.
# With -C: seinectl supportbundle's (0 complete, 1 incomplete or not written).
set -eu

SEINECTL=${SEINECTL:-seinectl}
config=/etc/seine/seine-agent.yaml
outdir=.
kubeconfig=
agentlog=
cluster=
selector=
since=

usage() {
	cat <<USAGE
usage: seine-diag.sh [-c CONFIG] [-d OUTDIR] [-k KUBECONFIG] [-l AGENT_LOG]
       seine-diag.sh -C [-d OUTDIR] [-k KUBECONFIG] [-L SELECTOR] [-s SINCE]
  -c CONFIG      the agent configuration (default $config)
  -d OUTDIR      where the bundle goes (default: the current directory)
  -k KUBECONFIG  also collect what the cluster says about Seine
  -l AGENT_LOG   the agent's log file, when it logs to one
  -C             the whole cluster's bundle (seinectl supportbundle), not this node's
  -L SELECTOR    with -C: the nodes to collect from (a label selector)
  -s SINCE       with -C: only logs of the last SINCE (e.g. 1h)
USAGE
}

while getopts c:d:k:l:CL:s:h opt; do
	case $opt in
	C) cluster=1 ;;
	L) selector=$OPTARG ;;
	s) since=$OPTARG ;;
	c) config=$OPTARG ;;
	d) outdir=$OPTARG ;;
	k) kubeconfig=$OPTARG ;;
	l) agentlog=$OPTARG ;;
	h)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then
	usage >&2
	exit 2
fi

if ! command -v "$SEINECTL" >/dev/null 2>&1; then
	echo "seine-diag: $SEINECTL is not in PATH (set SEINECTL to its path)" >&2
	exit 2
fi

if [ -n "$cluster" ]; then
	set -- supportbundle -d "$outdir"
	if [ -n "$kubeconfig" ]; then
		set -- "$@" --kubeconfig="$kubeconfig"
	fi
	if [ -n "$selector" ]; then
		set -- "$@" -l "$selector"
	fi
	if [ -n "$since" ]; then
		set -- "$@" --since="$since"
	fi
	echo "== seinectl supportbundle"
	exec "$SEINECTL" "$@"
fi

echo "== seinectl check"
check=0
"$SEINECTL" check --config="$config" -o wide || check=$?

bundle="$outdir/seine-bundle-$(hostname)-$(date -u +%Y%m%dT%H%M%SZ).tar.gz"
set -- bundle -o "$bundle" --config="$config"
if [ -n "$kubeconfig" ]; then
	set -- "$@" --kubeconfig="$kubeconfig"
fi
if [ -n "$agentlog" ]; then
	set -- "$@" --agent-log="$agentlog"
fi
echo "== seinectl bundle"
if ! "$SEINECTL" "$@"; then
	echo "seine-diag: the bundle could not be written" >&2
	exit 3
fi
echo "bundle: $bundle"
if [ "$check" -ne 0 ]; then
	echo "seine-diag: some checks failed (see above)" >&2
	exit 1
fi
