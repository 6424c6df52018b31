#!/usr/bin/env bash
# dns.sh -- keymesh's DNS server against Knot DNS (knotd, one UDP worker), side by side in one
# run, in a network namespace this script creates (loopback only inside it).
#
#   dnsperf (CPU 1) --UDP 127.0.0.1:5354--> keymesh up      (CPU 0)  [dns] listen
#   dnsperf (CPU 1) --UDP 127.0.0.1:5353--> knotd           (CPU 0)  udp-workers: 1
#
# keymesh serves mesh.internal. from its own logic (AAAA and TXT derive from the node ID, SVCB
# from the configured [peer] addresses). Knot serves a zone file with the SAME names and records:
# the AAAA (VIPs) and TXT ("v=keymesh1 k=...") answers are taken from keymesh with dig once and
# written into the zone, and the script checks that both servers then answer identically.
#
# Metrics (RUNS runs each, interleaved km / knot / km-svcb so drifts of the shared machine hit
# both servers alike; dnsperf as in the team's peers.sh: 1 client thread, 100 outstanding):
#   qps        dnsperf "Queries per second", DNS_DUR seconds, UDP
#                aaaa+txt: AAAA and TXT of NAMES node IDs (keymesh and knot, same query file)
#                svcb:     SVCB of the PEERS configured peers (keymesh only: Knot has no such logic)
#   latency    dnsperf "Average Latency" (ms); dnsperf 2.10 reports no percentiles, so no p99
#   lost       dnsperf "Queries lost"
#   cpu        the server's utime+stime during the run / wall time (100 % = one core busy)
#   rss        the server's VmRSS idle (before the first run), VmRSS sampled mid-run, VmHWM at
#              the end (from /proc/PID/status)
#   ready      DNS readiness after start, READY_N times: from exec of `keymesh up` until
#              `dig +short @127.0.0.1 -p 5354 <its own FQDN> AAAA` (polled every 10 ms) answers.
#              This is NOT mDNS discovery between two nodes (tests/integration/lan.sh covers that).
#
# Both servers are pinned to CPU 0 (taskset) and dnsperf to CPU 1 (PIN=0 turns pinning off), so
# "qps on one core" is literal: a server at ~100 % cpu is the bottleneck, below that the client is.
#
# Usage:  bench/dns.sh   (as root; about RUNS*3*DNS_DUR s + 30 s)
# Env:    DNS_DUR=10 RUNS=3 NAMES=100 PEERS=4 READY_N=5 PIN=1
#         KM=path/to/keymesh (default: build/release/core/daemon/keymesh if present, else a
#         Release build of the work tree in build/bench-dns)
#         DOC=docs/BENCHMARKS-DNS.md (results section replaced between its markers; DOC= to skip)
#         KEEP=1 (keep the work dir)  QUIET_PCT=15 QUIET_TIMEOUT=10 (see bench/lib.sh)
# Output: the results section of $DOC, and in the work dir results/raw.tsv (metric, variant,
#         value), contention.tsv, logs/ (dnsperf outputs, daemon logs, zone, queries).
#
# Everything (namespace, processes by PID, the work dir) is removed on every exit path.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); ROOT=$(dirname "$HERE")
DNS_DUR=${DNS_DUR:-10}; RUNS=${RUNS:-3}; NAMES=${NAMES:-100}; PEERS=${PEERS:-4}; READY_N=${READY_N:-5}
PIN=${PIN:-1}; DOC=${DOC-$ROOT/docs/BENCHMARKS-DNS.md}
NS=kmdns; NA=$NS; NB=kmdns-unused     # lib.sh's netns_down handles NA/NB; only NA is created here
KMPORT=5354; KNOTPORT=5353; SUFFIX=mesh.internal
CMDLINE="bench/dns.sh${*:+ $*}"; for v in DNS_DUR RUNS NAMES PEERS READY_N PIN KM; do
  [ -n "${!v+x}" ] && [ -n "${!v}" ] && CMDLINE="$v=${!v} $CMDLINE"; done
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

[ "$(id -u)" = 0 ] || { echo "dns.sh: run as root (network namespace)" >&2; exit 1; }
for c in ip dnsperf knotd dig taskset python3 ss; do
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || { echo "dns.sh: $c missing" >&2; exit 1; }
done
exec 9>/run/km-bench-dns.lock
flock -n 9 || { echo "dns.sh: another run is in progress (/run/km-bench-dns.lock)" >&2; exit 1; }

W=$(mktemp -d /tmp/km-bench-dns.XXXXXX); R=$W/results; L=$R/logs; RAW=$R/raw.tsv
mkdir -p "$L"; : > "$RAW"; : > "$R/contention.tsv"
cleanup(){
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null; done
  [ "$NETNS_OURS" = 1 ] && netns_down
  if [ "${KEEP:-0}" = 1 ]; then log "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
rec(){ printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RAW"; }     # metric variant value
die(){ echo "dns.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- keymesh binary
if [ -z "${KM:-}" ]; then
  if [ -x "$ROOT/build/release/core/daemon/keymesh" ]; then KM=$ROOT/build/release/core/daemon/keymesh
  else
    log "building keymesh (Release) from the work tree in build/bench-dns"
    (cmake -S "$ROOT" -B "$ROOT/build/bench-dns" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$L/build.log" 2>&1 &&
      ninja -C "$ROOT/build/bench-dns" keymesh >>"$L/build.log" 2>&1) || { tail -20 "$L/build.log" >&2; exit 1; }
    KM=$ROOT/build/bench-dns/core/daemon/keymesh
  fi
fi
[ -x "$KM" ] || die "no keymesh at $KM"
KM=$(readlink -f "$KM")
KM_REV_DESC="$KM, work tree at git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' ':!docs' 2>/dev/null || echo ' + uncommitted changes')"

# ---------------------------------------------------------------- namespace (loopback only)
netns_down
NETNS_OURS=1
ip netns add "$NS" || die "cannot create namespace $NS"
ip -n "$NS" link set lo up || die "cannot bring lo up in $NS"
log "namespace $NS (loopback only)"
PCPU=(); CCPU=()
[ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ] && { PCPU=(taskset -c 0); CCPU=(taskset -c 1); }

# ---------------------------------------------------------------- node IDs, keymesh config
nodeid(){ "$KM" id --dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'; }
"$KM" init --dir "$W/node" >/dev/null || die "keymesh init failed"
SELF=$(nodeid "$W/node") || die "keymesh id failed"
IDS=()
for i in $(seq "$NAMES"); do
  "$KM" init --dir "$W/ids/$i" >/dev/null || die "keymesh init failed"; IDS+=("$(nodeid "$W/ids/$i")")
done
{ cat <<EOF
[mesh]
listen = 127.0.0.1:15022
[socks5]
enabled = false
[http]
enabled = false
[mdns]
enabled = false
[dns]
listen = 127.0.0.1:$KMPORT
EOF
  # peers: the first PEERS node IDs; half on a public address (SVCB "mapped"), half on loopback
  # (SVCB "lan" for a requester on the same link, which 127.0.0.1 is)
  for i in $(seq "$PEERS"); do
    if (( i % 2 )); then a=203.0.113.$i:15022; else a=127.0.0.$((i + 1)):15022; fi
    printf '[peer p%d]\nnode = %s\naddress = %s\n' "$i" "${IDS[$((i - 1))]}" "$a"
  done; } > "$W/node/keymesh.conf"

for id in "${IDS[@]}"; do echo "$id.$SUFFIX AAAA"; echo "$id.$SUFFIX TXT"; done > "$L/queries-aaaa-txt.txt"
for i in $(seq "$PEERS"); do echo "${IDS[$((i - 1))]}.$SUFFIX SVCB"; done > "$L/queries-svcb.txt"

km_up(){ # logfile : start keymesh in the namespace; sets LASTPID
  bgstart "$1" ip netns exec "$NS" "${PCPU[@]}" "$KM" up --dir "$W/node"; }
kdig(){ nsx "$NS" dig +time=1 +tries=1 -p "$@"; }
km_up "$L/keymesh.log"; KMPID=$LASTPID
udpl(){ nsx "$NS" ss -Hlun "sport = :$1" | grep -q .; }
waitfor 10 udpl "$KMPORT" || die "keymesh DNS did not start: $(tail -3 "$L/keymesh.log")"

# ---------------------------------------------------------------- the same records for Knot
log "asking keymesh for the AAAA and TXT of $NAMES names"
kdig "$KMPORT" @127.0.0.1 +noall +answer -f "$L/queries-aaaa-txt.txt" > "$L/answers-keymesh.txt" ||
  die "dig against keymesh failed"
[ "$(grep -c . "$L/answers-keymesh.txt")" = $((2 * NAMES)) ] || die "keymesh gave $(grep -c . "$L/answers-keymesh.txt") answers, expected $((2 * NAMES))"
mkdir -p "$W/knot/db"
{ echo "\$ORIGIN $SUFFIX."; echo '$TTL 60'
  echo "@ IN SOA $SUFFIX. hostmaster.$SUFFIX. 1 3600 600 86400 60"
  echo "@ IN NS $SUFFIX."
  # "name. 60 IN AAAA addr" / "name. 60 IN TXT "..."" as dig printed them
  awk '{ $2 = 60; print }' "$L/answers-keymesh.txt"; } > "$W/knot/$SUFFIX.zone"
cp "$W/knot/$SUFFIX.zone" "$L/knot.zone"
cat > "$W/knot/knot.conf" <<EOF
server:
    rundir: "$W/knot"
    listen: 127.0.0.1@$KNOTPORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "$W/knot/knot.sock"
log:
  - target: stderr
    any: warning
database:
    storage: "$W/knot/db"
zone:
  - domain: $SUFFIX
    storage: "$W/knot"
    file: $SUFFIX.zone
EOF
bgstart "$L/knotd.log" ip netns exec "$NS" "${PCPU[@]}" knotd -c "$W/knot/knot.conf"; KNOTPID=$LASTPID
waitfor 10 udpl "$KNOTPORT" || die "knotd did not start: $(tail -3 "$L/knotd.log")"
waitfor 10 kdig "$KNOTPORT" @127.0.0.1 +short "${IDS[0]}.$SUFFIX" AAAA || true
kdig "$KNOTPORT" @127.0.0.1 +noall +answer -f "$L/queries-aaaa-txt.txt" > "$L/answers-knot.txt"
norm(){ awk '{ $2 = ""; print tolower($0) }' "$1" | sort; }
if ! diff <(norm "$L/answers-keymesh.txt") <(norm "$L/answers-knot.txt") > "$L/answers.diff"; then
  die "knot and keymesh answer differently: $(head -5 "$L/answers.diff")"
fi
log "knot and keymesh give the same $((2 * NAMES)) AAAA/TXT answers"
kdig "$KMPORT" @127.0.0.1 +short "${IDS[0]}.$SUFFIX" SVCB > "$L/svcb-sample.txt"
[ -s "$L/svcb-sample.txt" ] || die "keymesh has no SVCB for peer p1"
# answer sizes (UDP payload), for the report
for srv in keymesh:$KMPORT knot:$KNOTPORT; do
  for t in AAAA TXT; do
    s=$(kdig "${srv#*:}" @127.0.0.1 "${IDS[0]}.$SUFFIX" "$t" | sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p')
    rec size.$t "${srv%%:*}" "${s:-0}"
  done
done
rec size.SVCB keymesh "$(kdig "$KMPORT" @127.0.0.1 "${IDS[0]}.$SUFFIX" SVCB | sed -n 's/.*MSG SIZE  rcvd: \([0-9]*\).*/\1/p')"

sleep 1
declare -A SPID=([keymesh]=$KMPID [knot]=$KNOTPID) SPORT=([keymesh]=$KMPORT [knot]=$KNOTPORT)
KNOT_ALL="$KNOTPID $(descendants "$KNOTPID" | tr '\n' ' ')"
declare -A SPIDS=([keymesh]=$KMPID [knot]=$KNOT_ALL)
for s in keymesh knot; do rec rss.idle "$s" "$(memsum "${SPIDS[$s]}" VmRSS)"; done

# ---------------------------------------------------------------- dnsperf, interleaved
perf(){ # variant(km|knot|km-svcb) run
  local v=$1 srv q port f o c0 c1 t0 t1 dp
  case $v in km) srv=keymesh; q=$L/queries-aaaa-txt.txt;; knot) srv=knot; q=$L/queries-aaaa-txt.txt;;
    km-svcb) srv=keymesh; q=$L/queries-svcb.txt;; esac
  port=${SPORT[$srv]}; o=$L/dnsperf-$v-$2.txt
  alive "${SPID[$srv]}" || { rec fail "$v" "server gone"; return 1; }
  guard_begin
  c0=$(cputicks "${SPIDS[$srv]}"); t0=$(date +%s%N)
  nsx "$NS" "${CCPU[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$q" -l "$DNS_DUR" -c 1 -T 1 -q 100 > "$o" 2>&1 & dp=$!
  sleep "$(awk -v d="$DNS_DUR" 'BEGIN{print d/2}')"
  rec rss.load "$v" "$(memsum "${SPIDS[$srv]}" VmRSS)"
  wait $dp
  c1=$(cputicks "${SPIDS[$srv]}"); t1=$(date +%s%N)
  guard_end "dns.$v.$2"
  local qps avg lost
  qps=$(awk '/Queries per second/{print $4}' "$o"); avg=$(awk '/Average Latency/{printf "%.4f", $4*1000}' "$o")
  lost=$(awk '/Queries lost/{print $3}' "$o")
  [ -n "$qps" ] || { rec fail "$v" "dnsperf: $(tail -2 "$o" | tr '\n' ' ')"; log "  $v: dnsperf failed"; return 1; }
  rec qps "$v" "$qps"; rec lat.avg "$v" "${avg:-0}"; rec lost "$v" "${lost:-0}"
  rec cpu "$v" "$(awk -v d=$((c1 - c0)) -v k="$CLK" -v e=$((t1 - t0)) 'BEGIN{printf "%.1f", 100*d/k/(e/1e9)}')"
  rec contention "$v" "$G_PCT"
  log "  $v run $2: $qps qps, avg $avg ms, lost $lost, foreign CPU $G_PCT %"
}
log "dnsperf: $RUNS runs x (keymesh, knot, keymesh SVCB), ${DNS_DUR}s each"
for r in $(seq "$RUNS"); do perf km "$r"; perf knot "$r"; perf km-svcb "$r"; done
for s in keymesh knot; do rec rss.hwm "$s" "$(memsum "${SPIDS[$s]}" VmHWM)"; done
stop "$KNOTPID"; stop "$KMPID"

# ---------------------------------------------------------------- DNS readiness after start
log "DNS readiness after start: $READY_N runs"
for r in $(seq "$READY_N"); do
  waitfor 10 bash -c "! ip netns exec $NS ss -Hlun 'sport = :$KMPORT' | grep -q ." || true
  t0=$(date +%s%N); km_up "$L/keymesh-ready-$r.log"; p=$LASTPID; ok=0
  for _ in $(seq 500); do
    if [ -n "$(kdig "$KMPORT" @127.0.0.1 +short "$SELF.$SUFFIX" AAAA 2>/dev/null)" ]; then ok=1; break; fi
    sleep 0.01
  done
  t1=$(date +%s%N)
  if [ $ok = 1 ]; then rec ready keymesh "$(awk -v d=$((t1 - t0)) 'BEGIN{printf "%.1f", d/1e6}')"
  else rec fail ready "no answer within 500 polls"; fi
  stop "$p"
done

# ---------------------------------------------------------------- report
MACHINE="$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
VERS="$(dnsperf -h 2>&1 | sed -n 's/^Version /dnsperf /p'), $(knotd --version 2>&1 | head -1)"
python3 - "$RAW" "$R/report.md" "$CMDLINE" "$MACHINE" "$VERS" "$KM_REV_DESC" "$DNS_DUR" "$RUNS" "$NAMES" "$PEERS" "$READY_N" "$PIN" "$(date -u +%F)" "$L/svcb-sample.txt" "$G_MAX" <<'EOF'
import sys, statistics as st, collections
raw, out, cmd, machine, vers, rev, dur, runs, names, peers, readyn, pin, day, svcbf, gmax = sys.argv[1:]
d = collections.defaultdict(list)
for l in open(raw):
    m, v, x = l.rstrip("\n").split("\t")
    try: d[(m, v)].append(float(x))
    except ValueError: d[(m, v)].append(x)
med = lambda k: st.median(d[k]) if d.get(k) else None
def f(x, nd=0):
    return "-" if x is None else ("%.*f" % (nd, x))
def rng(k, nd=0):
    v = d.get(k)
    return "-" if not v else "%s (%s-%s)" % (f(st.median(v), nd), f(min(v), nd), f(max(v), nd))
o = []
o.append("Command: `%s` (as root), %s." % (cmd, day))
o.append("")
o.append("- Machine: %s. Both servers pinned to CPU 0, dnsperf to CPU 1%s." % (machine, "" if pin == "1" else " (NOT: PIN=0)"))
o.append("- Tools: %s. keymesh: %s." % (vers, rev))
o.append("- dnsperf: UDP, 1 client thread (`-c 1 -T 1`), 100 outstanding (`-q 100`), %s s per run, "
         "%s runs per row, rows interleaved; median (min-max) over the runs." % (dur, runs))
o.append("- Query files: AAAA and TXT of the same %s node IDs for both servers (Knot's zone holds "
         "exactly the records keymesh gave, checked equal before the runs); SVCB of the %s configured "
         "peers for keymesh only." % (names, peers))
o.append("")
o.append("| server | queries | qps | avg latency (ms) | lost | server CPU (% of one core) | VmRSS idle (KiB) | VmRSS mid-run (KiB) | VmHWM end (KiB) |")
o.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
rows = [("keymesh", "km", "AAAA+TXT"), ("knotd, 1 UDP worker", "knot", "AAAA+TXT"), ("keymesh", "km-svcb", "SVCB (keymesh only)")]
for name, v, q in rows:
    s = "knot" if v == "knot" else "keymesh"
    o.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (name, q, rng(("qps", v)), rng(("lat.avg", v), 3),
             f(sum(d.get(("lost", v), [0]))), rng(("cpu", v)), f(med(("rss.idle", s))), rng(("rss.load", v)),
             f(med(("rss.hwm", s)))))
o.append("")
k, n = med(("qps", "km")), med(("qps", "knot"))
if k and n:
    r = k / n
    o.append("**Ratio keymesh / knot (AAAA+TXT, median qps): %.2fx.** Target (DESIGN.md section 10): at least "
             "1.0x Knot's single-worker qps on one core: **%s**." % (r, "met" if r >= 1.0 else "NOT met"))
    pr = [a / b for a, b in zip(d[("qps", "km")], d[("qps", "knot")])]
    o.append("Per interleaved run pair: %s." % ", ".join("%.2fx" % x for x in pr))
o.append("")
sz = lambda t, s: f(med(("size." + t, s)))
o.append("Answer sizes (bytes, one name): AAAA keymesh %s / knot %s, TXT keymesh %s / knot %s, SVCB keymesh %s." %
         (sz("AAAA", "keymesh"), sz("AAAA", "knot"), sz("TXT", "keymesh"), sz("TXT", "knot"), sz("SVCB", "keymesh")))
o.append("SVCB answer of a peer: `%s`." % " / ".join(l.strip() for l in open(svcbf) if l.strip()))
o.append("")
rd = d.get(("ready", "keymesh"), [])
if rd:
    o.append("**DNS readiness after start** (exec of `keymesh up` until `dig +short @127.0.0.1 -p 5354 <own FQDN> AAAA` "
             "answers, polled every 10 ms; each poll is a dig process, so the resolution is about 10 ms + one dig): "
             "median %.1f ms over %d starts (%s ms). Not mDNS discovery between nodes: tests/integration/lan.sh covers that." %
             (st.median(rd), len(rd), ", ".join("%.1f" % x for x in rd)))
fails = [(v, x) for (m, v), xs in d.items() if m == "fail" for x in xs]
if fails:
    o.append(""); o.append("Failures: " + "; ".join("%s: %s" % fx for fx in fails))
o.append("")
o.append("CPU used by processes outside this script during the measurements: up to %s %% of the machine "
         "(per run: contention column of raw.tsv)." % gmax)
open(out, "w").write("\n".join(o) + "\n")
EOF
cat "$R/report.md"
cp "$RAW" "$L/../raw.tsv" 2>/dev/null
if [ -n "$DOC" ] && [ -f "$DOC" ] && grep -q '<!-- results:begin -->' "$DOC"; then
  python3 - "$DOC" "$R/report.md" <<'EOF'
import sys, re
doc, rep = sys.argv[1:]
t = open(doc).read(); r = open(rep).read()
t = re.sub(r"(<!-- results:begin -->\n).*?(<!-- results:end -->)", lambda m: m.group(1) + "\n" + r + "\n" + m.group(2), t, flags=re.S)
open(doc, "w").write(t)
EOF
  log "results written to $DOC"
fi
