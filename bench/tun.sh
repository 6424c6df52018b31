#!/usr/bin/env bash
# tun.sh -- keymesh's TUN path against Yggdrasil 0.4.7 and wireguard-go (and plain TCP over
# the veth), side by side in one run, between two network namespaces joined by a veth pair.
#
#   iperf3 -c in A --> keymesh A TUN (lwIP) ==SSH==> keymesh B --> iperf3 -s in B
#   iperf3 -c in A --> yggdrasil A (TUN)    ==TLS==> yggdrasil B (TUN) --> iperf3 -s in B
#   iperf3 -c in A --> wireguard-go A (TUN) ==UDP==> wireguard-go B (TUN) --> iperf3 -s in B
#   iperf3 -c in A --------------------- plain TCP ---------------------> iperf3 -s in B
#
# All tunnels are up at once and the runs are interleaved (RUNS rounds of every variant), so
# drifts of the shared machine hit all alike. The set-up of Yggdrasil (peering over the veth,
# no multicast, no admin socket) and wireguard-go (UAPI via `wg set`) follows
# ../shared/bench/peers.sh.
#
# Metrics
#   tput   iperf3 single TCP stream, DUR seconds, receiver's Mbit/s, RUNS runs per variant and
#          direction (A sends; "reverse": iperf3 -R, B sends)
#   cpu    utime+stime of the tunnel processes of both ends per GB of payload
#   ping   ICMPv6 echo RTT, PINGS samples (keymesh: answered after a mesh round trip)
#   rss    VmRSS of each end idle, and its peak sampled every 0.2 s during the iperf3 runs
#
# Usage:  bench/tun.sh   (as root; Debian packages: yggdrasil wireguard-go wireguard-tools
#                         iperf3; about 3 minutes with the defaults)
# Env:    RUNS=3 DUR=10 PINGS=50 VARIANTS="direct keymesh-tun yggdrasil wireguard-go" KM=path/to/keymesh (default: build a Release binary from the
#         work tree into build/bench) DOC=docs/BENCHMARKS-TUN.md (DOC= to skip) KEEP=1
#
# Only the namespaces this script creates carry 10.204.0.0/24; everything is removed on exit.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); ROOT=$(dirname "$HERE")
RUNS=${RUNS:-3}; DUR=${DUR:-10}; PINGS=${PINGS:-50}; DOC=${DOC-$ROOT/docs/BENCHMARKS-TUN.md}
NA=kmtA; NB=kmtB; IPA=10.204.0.1; IPB=10.204.0.2; VETH_A=kmtvA; VETH_B=kmtvB
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

[ "$(id -u)" = 0 ] || { echo "tun.sh: run as root" >&2; exit 1; }
for c in ip iperf3 yggdrasil wireguard-go wg python3 ping; do
  command -v "$c" >/dev/null || { echo "tun.sh: $c missing (apt-get install yggdrasil wireguard-go wireguard-tools iperf3)" >&2; exit 1; }
done
exec 9>/run/km-bench-tun.lock
flock -n 9 || { echo "tun.sh: another run is in progress" >&2; exit 1; }

W=$(mktemp -d /tmp/km-bench-tun.XXXXXX); R=$W/results; L=$R/logs; RAW=$R/raw.tsv
mkdir -p "$L"; : > "$RAW"; : > "$R/contention.tsv"
cleanup(){
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ "$NETNS_OURS" = 1 ] && netns_down
  rm -f /var/run/wireguard/wgkmtA.sock /var/run/wireguard/wgkmtB.sock
  if [ "${KEEP:-0}" = 1 ]; then log "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
rec(){ printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RAW"; }     # metric variant value

if [ -z "${KM:-}" ]; then
  log "building keymesh (Release) from the work tree into build/bench"
  (cmake -S "$ROOT" -B "$ROOT/build/bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$L/build.log" 2>&1 &&
    ninja -C "$ROOT/build/bench" keymesh >>"$L/build.log" 2>&1) || { tail -20 "$L/build.log" >&2; exit 1; }
  KM=$ROOT/build/bench/core/daemon/keymesh
  KM_DESC="git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' ':!docs' || echo ' + uncommitted changes'), Release"
else
  KM_DESC=$KM
fi
KM=$(readlink -f "$KM")

netns_up || { echo "tun.sh: cannot create the namespaces" >&2; exit 1; }
bgstart "$L/iperf3-B.log" ip netns exec "$NB" iperf3 -s -p 5201; IPERF=$LASTPID

# ---- keymesh: A with TUN, B exposing iperf3's port
for n in A B; do "$KM" init --dir "$W/km$n" >/dev/null; done
idof(){ "$KM" id --dir "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
IDA=$(idof "$W/kmA" node_id); IDB=$(idof "$W/kmB" node_id); VIPB=$(idof "$W/kmB" vip)
cat > "$W/kmA/keymesh.conf" <<EOF
[mesh]
listen = $IPA:15022
[socks5]
enabled = false
[http]
enabled = false
[dns]
enabled = false
[mdns]
enabled = false
[tun]
enabled = true
name = kmbench0
[peer b]
node = $IDB
address = $IPB:15022
EOF
cat > "$W/kmB/keymesh.conf" <<EOF
[mesh]
listen = $IPB:15022
expose = 5201
[socks5]
enabled = false
[http]
enabled = false
[dns]
enabled = false
[mdns]
enabled = false
[peer a]
node = $IDA
EOF
bgstart "$L/km-B.log" ip netns exec "$NB" "$KM" up --dir "$W/kmB"; KB=$LASTPID
bgstart "$L/km-A.log" ip netns exec "$NA" "$KM" up --dir "$W/kmA"; KA=$LASTPID
waitfor 10 ip netns exec "$NA" ping -6 -c1 -W1 "$VIPB" || { log "keymesh TUN did not come up"; tail "$L"/km-*.log >&2; exit 1; }

# ---- Yggdrasil 0.4.7: B listens on the veth, A peers with it
mkdir -p "$W/ygg"
for n in A B; do
  yggdrasil -genconf -json > "$W/ygg/$n.raw.json"
  python3 - "$W/ygg/$n.raw.json" "$W/ygg/$n.conf" "$n" "$IPB" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])); n = sys.argv[3]
c["MulticastInterfaces"] = []; c["AdminListen"] = "none"; c["IfName"] = "ygg" + n
c["Listen"] = ["tls://%s:7000" % sys.argv[4]] if n == "B" else []
c["Peers"] = [] if n == "B" else ["tls://%s:7000" % sys.argv[4]]
json.dump(c, open(sys.argv[2], "w"))
EOF
done
YB=$(yggdrasil -useconffile "$W/ygg/B.conf" -address)
bgstart "$L/ygg-B.log" ip netns exec "$NB" yggdrasil -useconffile "$W/ygg/B.conf" -loglevel warn; GB=$LASTPID
bgstart "$L/ygg-A.log" ip netns exec "$NA" yggdrasil -useconffile "$W/ygg/A.conf" -loglevel warn; GA=$LASTPID
waitfor 30 ip netns exec "$NA" ping -6 -c1 -W1 "$YB" || { log "yggdrasil did not come up"; exit 1; }

# ---- wireguard-go
mkdir -p "$W/wg"; (umask 077; for n in a b; do wg genkey > "$W/wg/$n.key"; wg pubkey < "$W/wg/$n.key" > "$W/wg/$n.pub"; done)
bgstart "$L/wg-a.log" env WG_PROCESS_FOREGROUND=1 ip netns exec "$NA" wireguard-go -f wgkmtA; WA=$LASTPID
bgstart "$L/wg-b.log" env WG_PROCESS_FOREGROUND=1 ip netns exec "$NB" wireguard-go -f wgkmtB; WB=$LASTPID
waitfor 10 test -S /var/run/wireguard/wgkmtA.sock; waitfor 10 test -S /var/run/wireguard/wgkmtB.sock
ip netns exec "$NA" wg set wgkmtA private-key "$W/wg/a.key" listen-port 51830 peer "$(cat "$W/wg/b.pub")" \
  allowed-ips 10.205.0.2/32 endpoint "$IPB:51831"
ip netns exec "$NB" wg set wgkmtB private-key "$W/wg/b.key" listen-port 51831 peer "$(cat "$W/wg/a.pub")" \
  allowed-ips 10.205.0.1/32 endpoint "$IPA:51830"
ip -n "$NA" addr add 10.205.0.1/24 dev wgkmtA; ip -n "$NA" link set wgkmtA up
ip -n "$NB" addr add 10.205.0.2/24 dev wgkmtB; ip -n "$NB" link set wgkmtB up
waitfor 20 ip netns exec "$NA" ping -c1 -W1 10.205.0.2 || { log "wireguard-go did not come up"; exit 1; }

declare -A DST=([direct]=$IPB [keymesh-tun]=$VIPB [yggdrasil]=$YB [wireguard-go]=10.205.0.2)
declare -A PROCS=([direct]="" [keymesh-tun]="$KA $KB" [yggdrasil]="$GA $GB" [wireguard-go]="$WA $WB")
VARIANTS=${VARIANTS:-direct keymesh-tun yggdrasil wireguard-go}
for v in keymesh-tun yggdrasil wireguard-go; do
  set -- ${PROCS[$v]}; rec rss.idle.A "$v" "$(memkb "$1" VmRSS)"; rec rss.idle.B "$v" "$(memkb "$2" VmRSS)"
done

# peak RSS sampler during a run: PID -> max kB into FILE
sample_rss(){ local p=$1 f=$2 m=0 v; while kill -0 "$p" 2>/dev/null && [ ! -e "$f.stop" ]; do
  v=$(memkb "$p" VmRSS); [ "$v" -gt "$m" ] && m=$v; sleep 0.2; done; echo "$m" > "$f"; }

run_iperf(){ # VARIANT RUN [-R]: A sends (or, with -R, receives)
  local v=$1 i=$2 rev=${3:-} procs=${PROCS[$1]} t0 t1 j=$L/iperf-$1-$2${3:-}.json bytes mbps sfx=
  [ -n "$rev" ] && sfx=_rev
  guard_begin
  t0=$(cputicks "$procs")
  local samplers=()
  for p in $procs; do sample_rss "$p" "$W/peak.$p" & samplers+=($!); done
  ip netns exec "$NA" iperf3 -c "${DST[$v]}" -p 5201 -t "$DUR" $rev -J > "$j" 2>"$L/iperf-$v-$i$rev.err"
  for p in $procs; do touch "$W/peak.$p.stop"; done
  for p in "${samplers[@]}"; do wait "$p"; done
  t1=$(cputicks "$procs")
  guard_end "iperf $v $i$rev"
  read -r bytes mbps < <(python3 -c "import json,sys; e=json.load(open(sys.argv[1]))['end']['sum_received']; print(int(e['bytes']), round(e['bits_per_second']/1e6,1))" "$j" 2>/dev/null) || { rec fail "$v" "iperf run $i"; return; }
  rec "tput$sfx" "$v" "$mbps"
  [ -n "$procs" ] && rec "cpu_s_per_gb$sfx" "$v" "$(python3 -c "print(round(($t1-$t0)/$CLK/($bytes/1e9),3))")"
  if [ -n "$procs" ] && [ -z "$rev" ]; then
    set -- $procs; rec rss.peak.A "$v" "$(cat "$W/peak.$1")"; rec rss.peak.B "$v" "$(cat "$W/peak.$2")"
    rm -f "$W"/peak.*
  fi
  rm -f "$W"/peak.*
  log "  $v run $i${rev:+ (reverse)}: $mbps Mbit/s"
}
for i in $(seq "$RUNS"); do for v in $VARIANTS; do run_iperf "$v" "$i"; run_iperf "$v" "$i" -R; done; done

for v in $VARIANTS; do
  guard_begin
  ip netns exec "$NA" ping -n -c "$PINGS" -i 0.02 "${DST[$v]}" 2>/dev/null |
    sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | while read -r ms; do rec ping_ms "$v" "$ms"; done
  guard_end "ping $v"
done
for v in keymesh-tun yggdrasil wireguard-go; do
  set -- ${PROCS[$v]}; rec rss.hwm.A "$v" "$(memkb "$1" VmHWM)"; rec rss.hwm.B "$v" "$(memkb "$2" VmHWM)"
done
ip netns exec "$NA" "$KM" status --dir "$W/kmA" --json > "$L/km-A-status.json" 2>&1

# ---- report
python3 - "$RAW" "$R/contention.tsv" "$DOC" "$KM_DESC" "$RUNS" "$DUR" "$PINGS" <<'EOF'
import collections, statistics, sys, datetime, re
raw, cont, doc, desc, runs, dur, pings = sys.argv[1:8]
d = collections.defaultdict(list)
for line in open(raw):
    m, v, x = line.rstrip("\n").split("\t")
    if m != "fail":
        d[(m, v)].append(float(x))
fails = [l for l in open(raw) if l.startswith("fail")]
med = lambda m, v: statistics.median(d[(m, v)]) if d[(m, v)] else float("nan")
V = ["direct", "keymesh-tun", "yggdrasil", "wireguard-go"]
out = []
out.append("<!-- tun-results:begin -->")
out.append(f"Run {datetime.date.today()} with `bench/tun.sh` (RUNS={runs} DUR={dur} PINGS={pings}), keymesh {desc}; "
           "both ends share this machine's 2 cores, so every figure is a lower bound for two machines.\n")
out.append("| variant | A to B Mbit/s (median, min-max) | keymesh is | B to A Mbit/s | keymesh is | CPU-s/GB A to B / B to A | ping ms (median) | RSS idle A/B MiB | RSS peak A/B MiB |")
out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
def tp(m, v):
    t = d[(m, v)]
    return f"{med(m, v):.0f} ({min(t):.0f}-{max(t):.0f})" if t else "-"
def ratio(m, v):
    return f"{med(m, 'keymesh-tun') / med(m, v):.2f}x" if d[(m, v)] and d[(m, 'keymesh-tun')] and v != "keymesh-tun" else "-"
for v in V:
    cpu = " / ".join(f"{med(m, v):.2f}" if d[(m, v)] else "-" for m in ("cpu_s_per_gb", "cpu_s_per_gb_rev"))
    pg = f"{med('ping_ms', v):.3f}" if d[("ping_ms", v)] else "-"
    mib = lambda m: f"{med(m + '.A', v) / 1024:.1f} / {med(m + '.B', v) / 1024:.1f}" if d[(m + ".A", v)] else "-"
    out.append(f"| {v} | {tp('tput', v)} | {ratio('tput', v)} | {tp('tput_rev', v)} | {ratio('tput_rev', v)} | {cpu} | {pg} | {mib('rss.idle')} | {mib('rss.peak')} |")
out.append("")
out.append("\"keymesh is\" is keymesh's median throughput divided by that variant's (above 1: keymesh faster). "
           "RSS peak is sampled during the A-to-B runs.")
c = [int(l.split("\t")[1]) for l in open(cont) if l.strip()]
if c:
    out.append(f"Other processes used at most {max(c)}% of the CPU during a measurement (median {statistics.median(c):.0f}%).")
if fails:
    out.append("Failures: " + "; ".join(l.strip().replace("\t", " ") for l in fails))
out.append("<!-- tun-results:end -->")
text = "\n".join(out)
print(text)
if doc:
    try:
        page = open(doc).read()
        page = re.sub(r"<!-- tun-results:begin -->.*<!-- tun-results:end -->", lambda m: text, page, flags=re.S)
    except FileNotFoundError:
        page = text + "\n"
    open(doc, "w").write(page)
EOF
