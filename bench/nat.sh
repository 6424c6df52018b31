#!/usr/bin/env bash
# nat.sh -- direct (mapped) vs relayed paths between two nodes behind NAT, in one run.
#
# Topology (tests/integration/nat_topo.sh, shared with the tests; network namespaces created
# here, documentation-range addresses only): a "public" bridge 192.0.2.0/24 with node G (the
# gateway) at 192.0.2.1; router R1 (192.0.2.11, nftables masquerade + miniupnpd) in front of
# node A (198.51.100.2); router R2 (192.0.2.12, masquerade) in front of node B (203.0.113.2).
# nginx (sendfile) serves a file in A's namespace on 127.0.0.1:8000, exposed to the mesh.
#
# Two set-ups, measured in the same run, alternating:
#   direct  A maps its mesh port at miniupnpd (portmap = upnp); B reaches A at the mapped
#           address 192.0.2.11:15022 (one SSH hop B -> A through both NATs)
#   relay   port mapping off, A and B registered with G; B reaches A through G (an SSH
#           session B -> A inside a channel B -> G spliced to a channel G -> A)
# Metrics:
#   tput     single-stream curl --socks5-hostname of a BIG_MB MiB file from A to B, Mbit/s
#   rtt      keymesh ping (a channel open/confirm over the connection), median of 20, ms
#   first    from `keymesh up` of A (G running) until B's first ping of A answers on that
#            path, ms; B is started as soon as G holds A's new record (B takes records from G
#            when its session to G starts), so this includes A's mapping or registration,
#            the record reaching G, B's start, registration and dial
#   upgrade  A without mapping, B relayed to it; A turns mapping on (SIGHUP): ms until B's
#            connection is direct (the background upgrade)
#   punch    no mapping, both nodes with [nat] punch = on: ms from B's first ping answered
#            through the relay until B's connection is punched (G coordinates a TCP
#            simultaneous open); then tput and rtt on the punched path
#   punch-rst  as punch, last, once both routers answer unsolicited WAN SYNs with resets and
#            R2's WAN is 20 ms from the public segment: ms to punched, the punches G
#            coordinated (1 = the first worked), how long G held A's PUNCH back, rtt there
#   ygg      Yggdrasil with A and B peering only with a Yggdrasil node in G's namespace (no
#            multicast, no other peers: traffic between them goes through G, as keymesh's
#            relay does): the same curl to A's nginx at A's Yggdrasil address, and ping -6
# The routers drop unsolicited TCP SYNs from the WAN (a firewalled home router); mapped ports
# are forwarded all the same. In the direct and relay set-ups the nodes set [nat] punch = off
# so relayed numbers stay relayed.
#
# Usage (root):  bench/nat.sh [KEYMESH]   env: BIG_MB (512), RUNS (3), OUT (docs/BENCHMARKS-NAT.md)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KM=${1:-$ROOT/build/core/daemon/keymesh}
BIG_MB=${BIG_MB:-512}
RUNS=${RUNS:-3}
OUT=${OUT:-$ROOT/docs/BENCHMARKS-NAT.md}
[ "$(id -u)" = 0 ] || { echo "nat.sh: run as root" >&2; exit 1; }
for c in ip nft miniupnpd nginx curl python3 yggdrasil ping; do
    command -v "$c" >/dev/null || { echo "nat.sh: needs $c" >&2; exit 1; }
done
W=$(mktemp -d /tmp/km-bench-nat.XXXXXX)
# The topology, shared with the tests: routers that drop unsolicited WAN SYNs.
source "$ROOT/tests/integration/nat_topo.sh"
PIDS=()
cleanup() {
    nat_topo_down
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
waitfor() { local n=$(($1 * 20)); shift; while [ $n -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; n=$((n - 1)); done; return 1; }
nat_topo_up kmbn$$ drop-syn || exit 1
# miniupnpd refuses reserved WAN addresses: it reports 11.0.0.10 (configured nowhere) and A
# announces its real public address with [nat] external_address (docs/NAT.md, Tests).
cat >"$W/miniupnpd.conf" <<EOF
ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
ext_ip=11.0.0.10
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d
system_uptime=yes
allow 1024-65535 198.51.100.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
ip netns exec "$R1" miniupnpd -d -f "$W/miniupnpd.conf" -P "$W/miniupnpd.pid" >"$W/miniupnpd.log" 2>&1 &
PIDS+=($!)

mkdir -p "$W/www" "$W/nginx"
head -c "$((BIG_MB << 20))" /dev/urandom >"$W/www/big"
cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  client_body_temp_path $W/nginx/body; proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fcgi; uwsgi_temp_path $W/nginx/uwsgi; scgi_temp_path $W/nginx/scgi;
  default_type application/octet-stream;
  server { listen 127.0.0.1:8000; root $W/www; }
  server { listen [::]:8001 ipv6only=on; root $W/www; } # for Yggdrasil
}
EOF
ip netns exec "$NA" nginx -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)

G=$W/g A=$W/a B=$W/b
for d in "$G" "$A" "$B"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
nid() { "$KM" id --dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'; }
IG=$(nid "$G") IA=$(nid "$A") IB=$(nid "$B")
common='[dns]
enabled = false
[mdns]
enabled = false
[http]
enabled = false'
cat >"$G/keymesh.conf" <<EOF
$common
[mesh]
listen = 192.0.2.1:15022
[socks5]
enabled = false
[nat]
portmap = off
[gateway]
enabled = on
[peer a]
node = $IA
relay = true
[peer b]
node = $IB
relay = true
EOF
# conf NODE-DIR PORTMAP OTHER-ID [PUNCH] [PORT]: A or B with [nat] portmap = PORTMAP, G as
# gateway, punch = PUNCH (off), the mesh on PORT (15022).
conf() {
    cat >"$1/keymesh.conf" <<EOF
$common
[mesh]
listen = 0.0.0.0:${5:-15022}
expose = 8000
[socks5]
listen = 127.0.0.1:1080
[nat]
portmap = $2
external_address = 192.0.2.11
gateway = g
punch = ${4:-off}
[peer g]
node = $IG
address = 192.0.2.1:15022
[peer other]
node = $3
EOF
}
up() { ip netns exec "$1" "$KM" up --dir "$2" >>"$2.log" 2>&1 & UPPID=$!; PIDS+=("$UPPID"); waitfor 10 ip netns exec "$1" "$KM" status --dir "$2"; }
down() { kill -TERM "$1" 2>/dev/null; local n=200; while [ $n -gt 0 ] && kill -0 "$1" 2>/dev/null; do sleep 0.05; n=$((n - 1)); done; kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
pingj() { ip netns exec "$NB" "$KM" ping --dir "$B" -n "$1" --json "$IA" 2>/dev/null; }
path_is() { pingj 1 | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['path']=='$1' else 1)"; }
# rtt_km: median of 20 keymesh pings from B to A, ms.
rtt_km() { pingj 20 | python3 -c 'import json,sys; r=sorted(json.load(sys.stdin)["rtt_ms"]); print("%.3f" % r[len(r)//2])'; }
# tput_of URL NS [CURL-OPTS]: curl of the big file in NS, Mbit/s ("fail" unless every byte came).
tput_of() {
    local n s0 s1
    s0=$(date +%s%N)
    n=$(ip netns exec "$2" curl -s -m 300 ${3:-} -o /dev/null -w '%{size_download}' "$1")
    s1=$(date +%s%N)
    if [ "$n" = $((BIG_MB << 20)) ]; then python3 -c "print('%.0f' % ($n * 8 / (($s1 - $s0) / 1e9) / 1e6))"; else echo fail; fi
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%g\n", (a[NR/2]+a[NR/2+1])/2}'; }

up "$PUB" "$G" || { echo "nat.sh: G did not start" >&2; exit 1; }
PG=$UPPID
conf "$B" off "$IA"
# G holds A's record with the path of this mode (mapped address, or a relay path).
g_has() {
    local want='"address": "192.0.2.11:15022"'
    [ "$1" = relay ] && want='"kind": "relay"'
    ip netns exec "$PUB" "$KM" resolve --dir "$G" --json "$IA" | grep -q "$want"
}

printf 'mode\trun\ttput_mbit\trtt_ms\tfirst_ms\n' >"$W/raw.tsv"
for run in $(seq 1 "$RUNS"); do
    for mode in direct relay; do
        if [ "$mode" = direct ]; then conf "$A" upnp "$IB"; else conf "$A" off "$IB"; fi
        # B forgets A's connection: restart B's view by restarting A (B's session to A dies).
        t0=$(date +%s%N)
        up "$NA" "$A" || { echo "nat.sh: A did not start" >&2; exit 1; }
        PA=$UPPID
        # B starts once G holds A's new record: B takes records from G when its session to G
        # starts (docs/PROTOCOL.md section 4).
        waitfor 30 g_has "$mode" || log "$mode run $run: G never got A's $mode path"
        up "$NB" "$B" || exit 1
        PB=$UPPID
        if ! waitfor 30 path_is "$mode"; then
            log "$mode run $run: B never reached A on the $mode path"
            down "$PA"
            down "$PB"
            continue
        fi
        t1=$(date +%s%N)
        first=$(( (t1 - t0) / 1000000 ))
        rtt=$(rtt_km)
        tput=$(tput_of "http://$IA.mesh.internal:8000/big" "$NB" "--socks5-hostname 127.0.0.1:1080")
        log "$mode run $run: $tput Mbit/s, rtt $rtt ms, first usable path $first ms"
        printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$run" "$tput" "$rtt" "$first" >>"$W/raw.tsv"
        down "$PB"
        down "$PA"
        sleep 1
    done
done

# relayed_pair PUNCH [PORT]: A without port mapping (its mesh on PORT), then B once G holds
# A's relay path, both with [nat] punch = PUNCH; PA and PB set. Succeeds when B's ping of A
# answers through the relay.
relayed_pair() {
    conf "$A" off "$IB" "$1" "${2:-15022}"
    up "$NA" "$A" || exit 1
    PA=$UPPID
    waitfor 30 g_has relay
    up "$NB" "$B" || exit 1
    PB=$UPPID
    waitfor 30 path_is relay
}
pair_down() {
    down "$PB"
    down "$PA"
    sleep 1
}

# Upgrade: A without port mapping, B relayed to it; A turns mapping on (SIGHUP); time until
# B's connection to A is direct (the background upgrade of docs/NAT.md).
printf 'run\tupgrade_ms\n' >"$W/upgrade.tsv"
for run in $(seq 1 "$RUNS"); do
    if relayed_pair off; then
        sed -i 's/^portmap = off$/portmap = upnp/' "$A/keymesh.conf"
        t0=$(date +%s%N)
        kill -HUP "$PA"
        if waitfor 90 path_is direct; then
            t1=$(date +%s%N)
            ms=$(( (t1 - t0) / 1000000 ))
            log "upgrade run $run: relay -> direct in $ms ms"
            printf '%s\t%s\n' "$run" "$ms" >>"$W/upgrade.tsv"
        else
            log "upgrade run $run: no upgrade within 90 s"
        fi
    fi
    pair_down
done
UP=$(awk -F'\t' 'NR>1 {print $2}' "$W/upgrade.tsv" | median)
UPALL=$(awk -F'\t' 'NR>1 {print $2}' "$W/upgrade.tsv" | tr '\n' ' ' | sed 's/ $//')

# Punch: no mapping, punch on for both; from B's first ping answered through the relay until
# its connection is punched; then the transfer and rtt on the punched path.
printf 'mode\trun\tupgrade_ms\ttput_mbit\trtt_ms\n' >"$W/punch.tsv"
conf "$B" off "$IA" on
for run in $(seq 1 "$RUNS"); do
    if relayed_pair on; then
        t0=$(date +%s%N)
        if waitfor 60 path_is punched; then
            t1=$(date +%s%N)
            ms=$(( (t1 - t0) / 1000000 ))
            rtt=$(rtt_km)
            tput=$(tput_of "http://$IA.mesh.internal:8000/big" "$NB" "--socks5-hostname 127.0.0.1:1080")
            log "punch run $run: relay -> punched in $ms ms; $tput Mbit/s, rtt $rtt ms"
            printf 'punched\t%s\t%s\t%s\t%s\n' "$run" "$ms" "$tput" "$rtt" >>"$W/punch.tsv"
        else
            log "punch run $run: not punched within 60 s"
        fi
    else
        log "punch run $run: B never reached A through the relay"
    fi
    pair_down
done
conf "$B" off "$IA"

# Yggdrasil through G: A and B peer only with a Yggdrasil node in G's namespace.
down "$PG"
mkdir -p "$W/ygg"
for n in G A B; do
    yggdrasil -genconf -json >"$W/ygg/$n.raw.json"
    python3 - "$W/ygg/$n.raw.json" "$W/ygg/$n.conf" "$n" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])); n = sys.argv[3]
c["MulticastInterfaces"] = []; c["AdminListen"] = "none"; c["IfName"] = "ygg" + n
if n == "G": c["Listen"] = ["tcp://192.0.2.1:12345"]
else: c["Peers"] = ["tcp://192.0.2.1:12345"]
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF
done
YA=$(yggdrasil -useconffile "$W/ygg/A.conf" -address)
declare -A YNS=([G]=$PUB [A]=$NA [B]=$NB)
for n in G A B; do
    ip netns exec "${YNS[$n]}" yggdrasil -useconffile "$W/ygg/$n.conf" -loglevel warn >"$W/ygg/$n.log" 2>&1 &
    PIDS+=($!)
done
printf 'run\ttput_mbit\trtt_ms\n' >"$W/ygg.tsv"
if waitfor 30 ip netns exec "$NB" ping -6 -c1 -W1 "$YA"; then
    sleep 2
    for run in $(seq 1 "$RUNS"); do
        tput=$(tput_of "http://[$YA]:8001/big" "$NB")
        rtt=$(ip netns exec "$NB" ping -6 -n -c 20 -i 0.05 "$YA" | python3 -c '
import re, sys
r = sorted(float(m) for m in re.findall(r"time=([0-9.]+)", sys.stdin.read()))
print("%.3f" % r[len(r) // 2] if r else "-")')
        log "yggdrasil run $run: $tput Mbit/s, rtt $rtt ms"
        printf '%s\t%s\t%s\n' "$run" "$tput" "$rtt" >>"$W/ygg.tsv"
    done
else
    log "yggdrasil: B never reached A through G"
fi

# Punch through resetting routers, far apart: both routers now answer unsolicited WAN SYNs
# with resets and R2's WAN is 20 ms from the public segment (nat_delay; the Yggdrasil nodes
# stay up, idle). Each run on fresh mesh ports, so no conntrack entry of the run before is
# met. From B's first ping answered through the relay until punched; the punches G
# coordinated for it, what G held A's frame back, and the rtt on the punched path.
printf 'run\tupgrade_ms\tcoordinations\theld_ms\trtt_ms\n' >"$W/punchrst.tsv"
NAT_FIREWALL=open
nat_rules "$R1" masquerade && nat_rules "$R2" masquerade
nat_delay "$R2" 20 || log "punch-rst: no delay link"
up "$PUB" "$G" || { echo "nat.sh: G did not start again" >&2; exit 1; }
PG=$UPPID
for run in $(seq 1 "$RUNS"); do
    conf "$B" off "$IA" on $((15200 + run))
    n0=$(grep -c 'coordinating a hole punch' "$G.log")
    if relayed_pair on $((15100 + run)); then
        t0=$(date +%s%N)
        if waitfor 60 path_is punched; then
            t1=$(date +%s%N)
            ms=$(( (t1 - t0) / 1000000 ))
            rtt=$(rtt_km)
            coord=$(grep 'coordinating a hole punch' "$G.log" | tail -n +$((n0 + 1)))
            nco=$(echo "$coord" | grep -c .)
            held=$(echo "$coord" | tail -n 1 | sed -nE 's/.*held [0-9]+ \/ ([0-9]+) ms.*/\1/p')
            log "punch-rst run $run: relay -> punched in $ms ms, $nco coordination(s), A held ${held:-?} ms, rtt $rtt ms"
            printf '%s\t%s\t%s\t%s\t%s\n' "$run" "$ms" "$nco" "${held:-fail}" "$rtt" >>"$W/punchrst.tsv"
        else
            log "punch-rst run $run: not punched within 60 s"
        fi
    else
        log "punch-rst run $run: B never reached A through the relay"
    fi
    pair_down
done

col() { awk -F'\t' -v m="$1" -v c="$2" 'NR>1 && $1==m && $c!="fail" {print $c}' "$W/raw.tsv"; }
all() { col "$1" "$2" | tr '\n' ' ' | sed 's/ $//'; }
TD=$(col direct 3 | median) TR=$(col relay 3 | median)
RD=$(col direct 4 | median) RR=$(col relay 4 | median)
FD=$(col direct 5 | median) FR=$(col relay 5 | median)
RATIO=$(python3 -c "print('%.2f' % ($TR / $TD))" 2>/dev/null || echo -)
pcol() { awk -F'\t' -v c="$1" 'NR>1 && $c!="fail" {print $c}' "$2"; }
pall() { pcol "$1" "$2" | tr '\n' ' ' | sed 's/ $//'; }
PU=$(pcol 3 "$W/punch.tsv" | median) PT=$(pcol 4 "$W/punch.tsv" | median) PR=$(pcol 5 "$W/punch.tsv" | median)
YT=$(pcol 2 "$W/ygg.tsv" | median) YR=$(pcol 3 "$W/ygg.tsv" | median)
XU=$(pcol 2 "$W/punchrst.tsv" | median) XH=$(pcol 4 "$W/punchrst.tsv" | median) XR=$(pcol 5 "$W/punchrst.tsv" | median)
XFIRST=$(awk -F'\t' 'NR>1 && $3==1' "$W/punchrst.tsv" | grep -c .)
YRATIO=$(python3 -c "print('%.2f' % ($TR / $YT))" 2>/dev/null || echo -)
YGGV=$(dpkg-query -W -f '${Version}' yggdrasil 2>/dev/null)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)
{
    echo "Command: \`BIG_MB=$BIG_MB RUNS=$RUNS bench/nat.sh\` (as root), $(date -u +%Y-%m-%d)."
    echo
    echo "- Machine: $(nproc) CPUs, $CPU, kernel $(uname -r). Shared with other work; nothing pinned."
    echo "- keymesh: $KM, work tree at git $GIT. miniupnpd $(miniupnpd --version 2>&1 | head -1 | awk '{print $2}'), nginx (sendfile) in A's namespace."
    echo "- Median over $RUNS runs of each set-up, runs alternating direct/relay."
    echo
    echo "| path | throughput (Mbit/s) | runs | rtt (ms, keymesh ping, median of 20) | runs | start to first usable path (ms) | runs |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    echo "| direct (mapped by UPnP at miniupnpd) | $TD | $(all direct 3) | $RD | $(all direct 4) | $FD | $(all direct 5) |"
    echo "| relay (through G) | $TR | $(all relay 3) | $RR | $(all relay 4) | $FR | $(all relay 5) |"
    echo "| punched (after relay, TCP simultaneous open) | $PT | $(pall 4 "$W/punch.tsv") | $PR | $(pall 5 "$W/punch.tsv") | | |"
    echo "| Yggdrasil ${YGGV:-?} through a Yggdrasil node at G (rtt: ping -6) | $YT | $(pall 2 "$W/ygg.tsv") | $YR | $(pall 3 "$W/ygg.tsv") | | |"
    echo
    echo "**Relayed / direct throughput: ${RATIO}x. keymesh relay / Yggdrasil through the same public node: ${YRATIO}x.** Relay -> direct upgrade (A turns port mapping on while B is relayed to it, until B's connection is direct): median $UP ms (runs: $UPALL). Relay -> punched (from B's first ping answered through the relay until its connection is punched): median $PU ms (runs: $(pall 3 "$W/punch.tsv"))."
    echo
    echo "Relay -> punched through routers that reset unsolicited SYNs, R2's WAN 20 ms from the public segment (Python forwarder, \`tests/integration/delay_link.py\`): median $XU ms (runs: $(pall 2 "$W/punchrst.tsv")); punched at G's first coordination in $XFIRST of $RUNS runs (coordinations per run: $(pall 3 "$W/punchrst.tsv")); G held A's PUNCH back median $XH ms (runs: $(pall 4 "$W/punchrst.tsv")); keymesh ping on the punched path median $XR ms (runs: $(pall 5 "$W/punchrst.tsv"))."
    echo
    echo "\"Start to first usable path\" runs from \`keymesh up\` of A (G running) until B's \`keymesh ping A\` answers on that path: A maps its port (direct) or registers with G (relay), signs its record and hands it to G; B is started as soon as G holds it (B takes records from G when its session to G starts), registers, learns A's record and dials. It includes B's own start."
} >"$W/table.md"
cat "$W/table.md"
python3 - "$OUT" "$W/table.md" <<'EOF'
import sys
out, table = sys.argv[1], open(sys.argv[2]).read()
head = """# NAT benchmark: direct (mapped) vs relayed

`bench/nat.sh` builds the topology of tests/integration/nat.sh (two nodes behind two
masquerading routers, one with miniupnpd, a gateway on the public segment) and measures the
same transfer over the mapped path and through the gateway relay in one run. The header of
the script describes every metric; the section between the markers is written by the script.

"""
try:
    text = open(out).read()
    a, b = text.index("<!-- results:begin -->"), text.index("<!-- results:end -->")
    text = text[:a] + "<!-- results:begin -->\n\n" + table + "\n" + text[b:]
except (OSError, ValueError):
    text = head + "<!-- results:begin -->\n\n" + table + "\n<!-- results:end -->\n"
open(out, "w").write(text)
EOF
echo "wrote $OUT" >&2
