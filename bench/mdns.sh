#!/usr/bin/env bash
# Time from a node starting to its peer resolving it over mDNS: two network namespaces on one
# veth link (TEST-NET-1 addresses), A freshly started; B starts; we poll A's `keymesh resolve`
# every 10 ms until it shows B with an mDNS-learned path. RUNS starts (default 5); median and
# range in milliseconds. Needs root. Everything it creates is removed on exit.
#
# Usage: sudo [KM=path/to/keymesh] [RUNS=5] bench/mdns.sh
set -u
cd "$(dirname "$0")/.."
KM=${KM:-build/release/core/daemon/keymesh}
RUNS=${RUNS:-5}
[ -x "$KM" ] || { echo "mdns bench: no $KM (build first)" >&2; exit 1; }
T=$(mktemp -d /tmp/km-mdns-bench.XXXXXX)
NA=kmmb-$$-a NB=kmmb-$$-b IA=kmmb$$a IB=kmmb$$b
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$NA" 2>/dev/null; ip netns del "$NB" 2>/dev/null; rm -rf "$T"
}
trap cleanup EXIT
ip netns add "$NA" && ip netns add "$NB" && ip link add "$IA" type veth peer name "$IB" || exit 1
ip link set "$IA" netns "$NA" && ip link set "$IB" netns "$NB"
for x in "$NA $IA 192.0.2.1" "$NB $IB 192.0.2.2"; do
    set -- $x
    ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.accept_dad=0"
    ip -n "$1" link set lo up; ip -n "$1" addr add "$3/24" dev "$2"; ip -n "$1" link set "$2" up
done
conf='[socks5]
enabled = false
[http]
enabled = false
[dns]
enabled = false'
"$KM" init --dir "$T/a" >/dev/null && "$KM" init --dir "$T/b" >/dev/null
printf '%s\n[mesh]\nlisten = 192.0.2.1:15022\n' "$conf" >"$T/a/keymesh.conf"
printf '%s\n[mesh]\nlisten = 192.0.2.2:15022\n' "$conf" >"$T/b/keymesh.conf"
IDB=$("$KM" id --dir "$T/b" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
ms=()
for i in $(seq "$RUNS"); do
    # A starts afresh each run, so it has learned nothing of B yet.
    ip netns exec "$NA" "$KM" up --dir "$T/a" >"$T/a.log" 2>&1 &
    PA=$!
    for _ in $(seq 500); do
        ip netns exec "$NA" "$KM" status --dir "$T/a" >/dev/null 2>&1 && break
        sleep 0.01
    done
    t0=$(date +%s%N)
    ip netns exec "$NB" "$KM" up --dir "$T/b" >"$T/b.log" 2>&1 &
    PB=$!
    found=0
    for _ in $(seq 1000); do   # at most ~10 s
        if ip netns exec "$NA" "$KM" resolve --dir "$T/a" --json "$IDB.mesh.internal" 2>/dev/null |
            grep -q '"source": "mdns"'; then found=1; break; fi
        sleep 0.01
    done
    t1=$(date +%s%N)
    kill -TERM "$PB" "$PA"; wait "$PB" "$PA" 2>/dev/null
    [ "$found" = 1 ] || { echo "run $i: not found within 10 s" >&2; exit 1; }
    ms+=($(( (t1 - t0) / 1000000 )))
    echo "run $i: ${ms[-1]} ms"
done
printf '%s\n' "${ms[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %d ms (min %d, max %d, n=%d)\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
