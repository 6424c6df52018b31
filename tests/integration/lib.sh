# Shared helpers for integration tests (sourced). Each test runs the real keymesh binary in
# a private temporary directory, kills only the processes it started, and removes what it
# created on every exit path. Every wait is bounded.
#
# Usage in a test:  source lib.sh; KM=$1; ...; check "what" cmd...; finish
set -u
KM=${1:?usage: $0 PATH-TO-keymesh}

# Run each test in a network namespace of its own (when root), so daemons on their default
# ports never meet another test's, or anything else on this machine.
if [ -z "${KM_IN_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    _ns="km-it-$$"
    if ip netns add "$_ns" 2>/dev/null; then
        # Deleted on every exit path of this outer shell, signals included.
        trap 'ip netns del "$_ns" 2>/dev/null' EXIT
        trap 'exit 143' TERM INT
        ip -n "$_ns" link set lo up
        KM_IN_NETNS=$_ns ip netns exec "$_ns" bash "$0" "$@"
        exit $?
    fi
fi
KM_WRAP=${KM_WRAP:-}          # e.g. "valgrind --error-exitcode=99 ..." for the daemon
T=$(mktemp -d /tmp/km-it.XXXXXX)
PIDS=()
PASS=0
FAIL=0

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

# veth_pair TAG: two network namespaces $NA and $NB joined by a veth ($IA in A at 192.0.2.1/24,
# $IB in B at 192.0.2.2/24, no DAD), deleted with everything else on exit, as is
# /etc/netns/$NA (a test may put a resolv.conf there for `ip netns exec`).
veth_pair() {
    NA=km-$1-$$-a NB=km-$1-$$-b IA=km$1$$a IB=km$1$$b
    trap cleanup_pair EXIT
    ip netns add "$NA" && ip netns add "$NB" || return 1
    ip link add "$IA" type veth peer name "$IB" || return 1
    ip link set "$IA" netns "$NA" && ip link set "$IB" netns "$NB" || return 1
    local x
    for x in "$NA $IA 192.0.2.1" "$NB $IB 192.0.2.2"; do
        set -- $x
        ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.accept_dad=0"
        ip -n "$1" link set lo up
        ip -n "$1" addr add "$3/24" dev "$2"
        ip -n "$1" link set "$2" up
    done
}
cleanup_pair() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$NA" 2>/dev/null
    ip netns del "$NB" 2>/dev/null
    rm -rf "/etc/netns/$NA"
    cleanup
}

ok()   { PASS=$((PASS + 1)); echo "ok - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "not ok - $*"; }

# check DESCRIPTION COMMAND...: passes when the command exits 0.
check() {
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

# expect_exit CODE DESCRIPTION COMMAND...: the command's exit status must be CODE; its
# stdout and stderr are kept in $T/out and $T/err.
expect_exit() {
    local code=$1 what=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -eq "$code" ]; then ok "$what"; else
        bad "$what (exit $rc, want $code)"; sed 's/^/    err: /' "$T/err" | head -5
    fi
}

# contains FILE PATTERN: grep -q with a readable failure.
contains() { grep -q -- "$2" "$1"; }

# waitfor SECONDS COMMAND...: poll every 50 ms until the command succeeds.
waitfor() {
    local n=$(( $1 * 20 )); shift
    while [ "$n" -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; n=$((n - 1)); done
    return 1
}

# start_daemon DIR [ARGS...]: start `keymesh up` in the background; sets DPID; waits until
# `keymesh status` answers (at most 10 s, valgrind is slow).
start_daemon() {
    local dir=$1; shift
    # shellcheck disable=SC2086
    $KM_WRAP "$KM" up --dir "$dir" "$@" >"$dir.log" 2>&1 &
    DPID=$!
    PIDS+=("$DPID")
    waitfor 10 "$KM" status --dir "$dir" "$@"
}

# stop_daemon: SIGTERM and wait up to 10 s; sets DRC (exit code) and DSTOP_MS.
stop_daemon() {
    local t0 t1 n=200
    t0=$(date +%s%N)
    kill -TERM "$DPID" 2>/dev/null
    while [ "$n" -gt 0 ] && kill -0 "$DPID" 2>/dev/null; do sleep 0.05; n=$((n - 1)); done
    t1=$(date +%s%N)
    DSTOP_MS=$(( (t1 - t0) / 1000000 ))
    if kill -0 "$DPID" 2>/dev/null; then kill -KILL "$DPID"; fi
    wait "$DPID"; DRC=$?
}

finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
    exit $?
}
