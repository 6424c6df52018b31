#!/usr/bin/env bash
# mesh.sh -- keymesh's SSH mesh against OpenSSH `ssh -N -D` (same cipher) and direct TCP,
# side by side in one run, between two network namespaces joined by a veth pair.
#
#   node A (namespace kmbA, 10.203.0.1)  --veth-->  node B (namespace kmbB, 10.203.0.2)
#   curl in A --SOCKS5--> keymesh A ==SSH==> keymesh B --> nginx in B (127.0.0.1:8000)
#   curl in A --SOCKS5--> ssh -N -D  ==SSH==> sshd in B --> nginx in B (127.0.0.1:8000)
#   curl in A ------------------- plain TCP ------------> nginx in B (10.203.0.2:8000)
#
# Variants: direct, ssh-aes / km-aes (aes128-gcm@openssh.com), ssh-chacha / km-chacha
# (chacha20-poly1305@openssh.com). All four tunnels are up at the same time and the throughput
# runs are interleaved, so slow drifts of the (shared) machine hit every variant alike.
#
# Metrics
#   tput      single-stream curl of a BIG_MB MiB file (HTTP/1.1, nginx sendfile), Mbit/s, RUNS runs
#   cpu       utime+stime of the tunnel processes of BOTH ends (keymesh A+B; ssh client + the
#             sshd processes of that connection) per GB (1e9 bytes) of payload
#   lat.new   curl time_total of a 3-byte file, a new TCP connection (and for the tunnels a new
#             SOCKS5 session and SSH channel) per request, LAT_N samples over an established session
#   lat.ka    the same over one kept-alive connection (curl with LAT_N URLs; the first is dropped)
#   setup     cold start, SETUP_N times: exec of the client end (`keymesh up` of A, which dials B on
#             the first request; `ssh -N -D`, which connects before it listens) until the first
#             reply through its SOCKS5 port (bench/firstreq.py); plus hyperfine of
#             `ssh -o BatchMode=yes root@B true` (HF_RUNS runs) for reference
#   tput.par  PAR simultaneous downloads of BIG_MB/PAR MiB each through one tunnel: aggregate
#             Mbit/s (first start to last end); mostly a check that nothing breaks under load
#   rss       VmRSS idle (after warm-up), highest VmRSS sampled every 0.1 s during the big
#             downloads and during the parallel ones, VmHWM at the end, VmRSS 2 s after the
#             load; per end (A = client side, B = server side)
#
# Usage:  bench/deps.sh   (once: nginx-light, hyperfine, openssh-server, ...)
#         bench/mesh.sh   (as root; about 3-6 minutes with the defaults)
# Env:    BIG_MB=2048 RUNS=5 LAT_N=300 SETUP_N=20 HF_RUNS=20 CURL_MAX=60 (s per download)
#         PAR=4 (parallel streams of BIG_MB/PAR MiB each, one run per variant: a load check)
#         KM_REV=HEAD (commit to build from a clean `git archive` export in the work dir;
#         KM_REV=worktree builds the work tree as it is into build/bench) or KM=path/to/keymesh
#         DOC=docs/BENCHMARKS.md (results page; DOC= to skip) KEEP=1 (keep the work dir)
#         QUIET_PCT=15 QUIET_TIMEOUT=10 (wait for other processes to calm down before measuring)
#         STALL_SNAP=30 (s: a keymesh download still running after this long -- a normal one takes
#         under 15 s -- gets live snapshots, at STALL_SNAP and STALL_SNAP+5 s, while curl is still
#         connected: logs/fail-VARIANT-WHAT-tNNs/; 0 = off)
#         PREV=/tmp/km-bench.XXXXXX/results (an earlier run kept with KEEP=1: the report compares the
#         receiving end's memory under parallel load with it)
#         VARIANTS="direct ssh-aes km-aes ssh-chacha km-chacha"
# Output: the results section of $DOC (replaced between its markers), and in the work dir
#         results/raw.tsv (metric, variant, value), contention.tsv, logs/.
#
# Only the two namespaces this script creates carry 10.203.0.0/24; outside them nothing but the
# commands above runs. Everything (namespaces, processes by PID, the work dir) is removed on exit.
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); ROOT=$(dirname "$HERE")
BIG_MB=${BIG_MB:-2048}; RUNS=${RUNS:-5}; LAT_N=${LAT_N:-300}; SETUP_N=${SETUP_N:-20}; PAR=${PAR:-4}
HF_RUNS=${HF_RUNS:-20}; CURL_MAX=${CURL_MAX:-60}; STALL_SNAP=${STALL_SNAP:-30}; PREV=${PREV:-}; DOC=${DOC-$ROOT/docs/BENCHMARKS.md}
VARIANTS=${VARIANTS:-direct ssh-aes km-aes ssh-chacha km-chacha}
NA=kmbA; NB=kmbB; IPA=10.203.0.1; IPB=10.203.0.2; VETH_A=kmbvA; VETH_B=kmbvB
HPORT=8000          # nginx in B: 0.0.0.0:8000 (the tunnels reach it as 127.0.0.1:8000 inside B)
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

[ "$(id -u)" = 0 ] || { echo "mesh.sh: run as root (network namespaces)" >&2; exit 1; }
for c in ip nginx curl hyperfine ssh sshd python3 ss; do
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || { echo "mesh.sh: $c missing (run bench/deps.sh)" >&2; exit 1; }
done
exec 9>/run/km-bench-mesh.lock
flock -n 9 || { echo "mesh.sh: another run is in progress (/run/km-bench-mesh.lock)" >&2; exit 1; }

W=$(mktemp -d /tmp/km-bench.XXXXXX); R=$W/results; L=$R/logs; RAW=$R/raw.tsv
mkdir -p "$L"; : > "$RAW"; : > "$R/contention.tsv"
SSHD=$W/ssh
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
fail(){ rec fail "$1" "$2"; log "  FAIL $1: $2"; }            # variant what

# ---------------------------------------------------------------- keymesh binary
if [ -z "${KM:-}" ]; then
  if [ "${KM_REV:-HEAD}" = worktree ]; then     # the work tree as it is, in build/bench
    src=$ROOT; bld=$ROOT/build/bench
  else                                          # a clean export of a commit: others' uncommitted edits do not count
    KM_REV=$(git -C "$ROOT" rev-parse --verify "${KM_REV:-HEAD}^{commit}") || { echo "mesh.sh: no commit ${KM_REV:-HEAD}" >&2; exit 1; }
    src=$W/src; bld=$W/src/build; mkdir -p "$src"
    git -C "$ROOT" archive --format=tar "${KM_REV:-HEAD}" | tar -x -C "$src" || { echo "mesh.sh: git archive ${KM_REV:-HEAD} failed" >&2; exit 1; }
  fi
  log "building keymesh (Release) from ${KM_REV:-HEAD} ($(git -C "$ROOT" rev-parse --short "${KM_REV:-HEAD}" 2>/dev/null || echo work tree))"
  (cmake -S "$src" -B "$bld" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$L/build.log" 2>&1 &&
    ninja -C "$bld" keymesh >>"$L/build.log" 2>&1) || { tail -20 "$L/build.log" >&2; exit 1; }
  KM=$bld/core/daemon/keymesh
  if [ "${KM_REV:-HEAD}" = worktree ]; then
    KM_REV_DESC="work tree at git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' ':!docs/BENCHMARKS.md' || echo ' + uncommitted changes')"
  else KM_REV_DESC="git $(git -C "$ROOT" rev-parse --short "${KM_REV:-HEAD}") ($(git -C "$ROOT" log -1 --format=%cs "${KM_REV:-HEAD}")), clean export, Release"; fi
fi
[ -x "$KM" ] || { echo "mesh.sh: no keymesh at $KM" >&2; exit 1; }
KM=$(readlink -f "$KM")

# ---------------------------------------------------------------- set-up
netns_up || { echo "mesh.sh: cannot create the namespaces" >&2; exit 1; }
mkdir -p "$W/www" "$W/nginx"
truncate -s "${BIG_MB}M" "$W/www/big"; truncate -s "$((BIG_MB / PAR))M" "$W/www/part"; printf 'ok\n' > "$W/www/small"
cat "$W/www/big" "$W/www/part" > /dev/null     # into the page cache (the first read of a sparse file is slow)
cat > "$W/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 100000; keepalive_timeout 60s;
  client_body_temp_path $W/nginx/body; proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fcgi; uwsgi_temp_path $W/nginx/uwsgi; scgi_temp_path $W/nginx/scgi;
  default_type application/octet-stream;
  server { listen 0.0.0.0:$HPORT; root $W/www; }
}
EOF
bgstart "$L/nginx.log" ip netns exec "$NB" nginx -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf"; NGINX=$LASTPID
waitfor 10 listening "$NB" "$HPORT" || { echo "mesh.sh: nginx did not start"; cat "$W/nginx/error.log"; exit 1; } >&2
nsx "$NA" curl -sf -o /dev/null "http://$IPB:$HPORT/small" || { echo "mesh.sh: nginx unreachable over the veth" >&2; exit 1; }

ssh_setup
start_sshd "$L/sshd.log" 22; SSHD_PID=$LASTPID
waitfor 10 listening "$NB" 22 || { echo "mesh.sh: sshd did not start"; cat "$L/sshd.log"; exit 1; } >&2

# keymesh: one node pair per cipher (A-x dials B-x). Mesh ports 15022 (aes), 15023 (chacha).
declare -A KMPORT=([aes]=15022 [chacha]=15023) SOCKS=([km-aes]=1080 [km-chacha]=1083 [ssh-aes]=1081 [ssh-chacha]=1082)
declare -A SSHC=([aes]=aes128-gcm@openssh.com [chacha]=chacha20-poly1305@openssh.com) KMC=([aes]=aes [chacha]=chacha20)
for c in aes chacha; do
  for n in A B; do "$KM" init --dir "$W/km-$n-$c" >/dev/null || { echo "mesh.sh: keymesh init failed" >&2; exit 1; }; done
  ida=$("$KM" id --dir "$W/km-A-$c" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
  idb=$("$KM" id --dir "$W/km-B-$c" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
  cat > "$W/km-A-$c/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = $IPA:${KMPORT[$c]}
ciphers = ${KMC[$c]}
[socks5]
listen = 127.0.0.1:${SOCKS[km-$c]}
[http]
enabled = false
[peer bee]
node = $idb
address = $IPB:${KMPORT[$c]}
EOF
  cat > "$W/km-B-$c/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = $IPB:${KMPORT[$c]}
expose = $HPORT
ciphers = ${KMC[$c]}
[socks5]
enabled = false
[http]
enabled = false
[peer ay]
node = $ida
EOF
done

declare -A PA PB        # variant -> "pid ..." of the A end / the B end
km_start(){ # c(aes|chacha) end(A|B) : sets LASTPID
  bgstart "$L/km-$2-$1.log" ip netns exec "$( [ "$2" = A ] && echo "$NA" || echo "$NB")" "$KM" up --dir "$W/km-$2-$1"
  local p=$LASTPID
  if [ "$2" = B ]; then waitfor 10 listening "$NB" "${KMPORT[$1]}"; else waitfor 10 listening "$NA" "${SOCKS[km-$1]}"; fi ||
    { log "keymesh $2 ($1) did not start: $(tail -3 "$L/km-$2-$1.log")"; return 1; }
  LASTPID=$p
}
ssh_start(){ # c : ssh -N -D in A; sets LASTPID
  bgstart "$L/ssh-$1.log" ip netns exec "$NA" ssh $(sshopt) -c "${SSHC[$1]}" -N -o ExitOnForwardFailure=yes \
    -D "127.0.0.1:${SOCKS[ssh-$1]}" "root@$IPB"
  local p=$LASTPID
  waitfor 15 listening "$NA" "${SOCKS[ssh-$1]}" || { log "ssh -D ($1) did not come up: $(tail -3 "$L/ssh-$1.log")"; return 1; }
  LASTPID=$p
}
# curl arguments of a variant: proxy + URL for FILE
curlargs(){ # variant file
  case $1 in
    direct) echo "http://$IPB:$HPORT/$2";;
    ssh-*)  echo "--socks5-hostname 127.0.0.1:${SOCKS[$1]} http://127.0.0.1:$HPORT/$2";;
    km-*)   echo "--socks5-hostname 127.0.0.1:${SOCKS[$1]} http://bee.mesh.internal:$HPORT/$2";;
  esac
}
variant_ok(){ # variant : its tunnel processes still run
  local p; for p in ${PA[$1]:-} ${PB[$1]:-}; do alive "$p" || return 1; done; return 0; }
# diag VARIANT WHAT : after a failure, keep what the tunnel looks like (status, sockets, logs)
# in logs/fail-VARIANT-WHAT/, and keep the work dir at exit
diag(){
  local d=$L/fail-$1-$2 c=${1#*-}; mkdir -p "$d"; KEEP=1
  nsx "$NA" ss -tnmi > "$d/ss-A.txt" 2>&1; nsx "$NB" ss -tnmi > "$d/ss-B.txt" 2>&1
  ps -o pid,stat,time,rss,args -p "$(echo ${PA[$1]:-} ${PB[$1]:-} | tr ' ' ,)" > "$d/ps.txt" 2>&1
  if [ "${1%%-*}" = km ]; then
    "$KM" status --dir "$W/km-A-$c" --json > "$d/status-A.json" 2>&1
    "$KM" status --dir "$W/km-B-$c" --json > "$d/status-B.json" 2>&1
    cp "$L/km-A-$c.log" "$L/km-B-$c.log" "$d/" 2>/dev/null; km_log_tail "$c"
  fi
  log "  diagnostics in $d (the work dir is kept)"
}
# stall_snap VARIANT WHAT TICK : at STALL_SNAP and STALL_SNAP+5 s (TICK = 0.1 s samples) of a download
# that is still running, the same snapshot as diag (curl's own socket is still there)
stall_snap(){
  [ "$STALL_SNAP" -gt 0 ] || return 0
  if [ "$3" = $((STALL_SNAP * 10)) ] || [ "$3" = $(((STALL_SNAP + 5) * 10)) ]; then
    log "  $1 $2: still running after $(($3 / 10)) s: live snapshot"; diag "$1" "$2-t$(($3 / 10))s"
  fi
}
km_log_tail(){ tail -n 5 "$L/km-A-$1.log" "$L/km-B-$1.log" 2>/dev/null | sed 's/^/    /' >&2; }

log "W=$W BIG_MB=$BIG_MB PAR=$PAR RUNS=$RUNS LAT_N=$LAT_N SETUP_N=$SETUP_N HF_RUNS=$HF_RUNS; $NCPU cores; $(uname -r)"
log "keymesh: $KM ($("$KM" --version 2>&1 | head -1))"

# ---------------------------------------------------------------- 1. connection set-up (cold)
log "connection set-up: ssh true (hyperfine), cold ssh -D and cold keymesh A to the first reply"
nsx "$NA" ssh $(sshopt) -c "${SSHC[aes]}" "root@$IPB" true || log "ssh root@$IPB true failed"
guard_begin
nsx "$NA" hyperfine -N --warmup 2 --runs "$HF_RUNS" --export-json "$L/hf-ssh-true.json" \
  "ssh $(sshopt) -c ${SSHC[aes]} root@$IPB true" > "$L/hf-ssh-true.txt" 2>&1 &&
  python3 -c 'import json,sys; [print(round(t*1000,3)) for t in json.load(open(sys.argv[1]))["results"][0]["times"]]' \
    "$L/hf-ssh-true.json" | while read -r v; do rec setup.ssh-true ssh-aes "$v"; done
guard_end setup.ssh-true
km_start aes B && PB[km-aes]=$LASTPID
ssh_cold(){ nsx "$NA" python3 "$HERE/firstreq.py" "${SOCKS[ssh-aes]}" 127.0.0.1 "$HPORT" /small 20 "$L/ssh-cold.log" -- \
  ssh $(sshopt) -c "${SSHC[aes]}" -N -o ExitOnForwardFailure=yes -D "127.0.0.1:${SOCKS[ssh-aes]}" "root@$IPB"; }
km_cold(){ nsx "$NA" python3 "$HERE/firstreq.py" "${SOCKS[km-aes]}" bee.mesh.internal "$HPORT" /small 20 "$L/km-cold.log" -- \
  "$KM" up --dir "$W/km-A-aes"; }
guard_begin
for i in $(seq "$SETUP_N"); do
  for v in ssh-aes km-aes; do
    if [ $v = ssh-aes ]; then out=$(ssh_cold); else out=$(km_cold); fi
    case $out in
      ready=*) set -- $out; rec setup.ready $v "${1#ready=}"; rec setup.first $v "${2#first=}"; rec setup.total $v "${3#total=}";;
      *) fail $v "cold start to first reply, attempt $i: ${out:-no output}"; [ $v = km-aes ] && km_log_tail aes;;
    esac
  done
done
guard_end setup.cold

# ---------------------------------------------------------------- 2. all tunnels up, idle memory
log "starting the tunnels"
for v in $VARIANTS; do
  c=${v#*-}
  case $v in
    ssh-*) ssh_start "$c" || { fail "$v" "ssh -D did not start"; continue; }
           PA[$v]=$LASTPID
           PB[$v]=$(descendants "$SSHD_PID" | tr '\n' ' ');;
    km-*)  if [ -z "${PB[$v]:-}" ] || ! alive "${PB[$v]}"; then km_start "$c" B || { fail "$v" "keymesh B did not start"; continue; }; PB[$v]=$LASTPID; fi
           km_start "$c" A || { fail "$v" "keymesh A did not start"; continue; }; PA[$v]=$LASTPID;;
  esac
done
# warm-up: one request each (keymesh dials on demand), then let everything settle
for v in $VARIANTS; do
  # shellcheck disable=SC2046
  nsx "$NA" curl -sf -m 10 -o /dev/null $(curlargs "$v" small) || fail "$v" "warm-up request failed"
done
for v in $VARIANTS; do [ "${v%%-*}" = ssh ] && PB[$v]=$(descendants "$SSHD_PID" | tr '\n' ' '); done
# the sshd processes of each ssh -D session: children of the listener started after each client;
# tell them apart by the client's source port
for v in $VARIANTS; do
  [ "${v%%-*}" = ssh ] || continue
  sp=$(nsx "$NA" ss -Htnp "dport = :22" | grep "pid=${PA[$v]}," | awk '{print $4}' | sed 's/.*://')
  mine=""
  for p in ${PB[$v]}; do
    nsx "$NB" ss -Htnp "sport = :22" | grep "pid=$p," | grep -q ":$sp\b" && mine="$mine $p"
  done
  # privilege-separated sshd: the [priv] process holds the socket, its child does the forwarding
  for p in $mine; do mine="$mine $(descendants "$p" | tr '\n' ' ')"; done
  PB[$v]=$(echo $mine | tr ' ' '\n' | sort -un | tr '\n' ' ')
  log "  $v: ssh pid ${PA[$v]}, sshd pids ${PB[$v]}"
  ps -o pid,ppid,rss,args -p "$(echo ${PA[$v]} ${PB[$v]} | tr ' ' ,)" >> "$L/ps-ssh.txt" 2>&1
done
sleep 2
for v in $VARIANTS; do
  [ "$v" = direct ] && continue
  variant_ok "$v" || continue
  rec rss.idle.A "$v" "$(memsum "${PA[$v]}" VmRSS)"; rec rss.idle.B "$v" "$(memsum "${PB[$v]}" VmRSS)"
done

# ---------------------------------------------------------------- 3. small-request latency
log "small-request latency: $LAT_N new connections and $LAT_N kept-alive requests per variant"
for v in $VARIANTS; do
  variant_ok "$v" || { fail "$v" "tunnel down before the latency test"; continue; }
  nf=0
  guard_begin
  for i in $(seq "$LAT_N"); do
    # shellcheck disable=SC2046
    o=$(nsx "$NA" curl -s -m 10 -o /dev/null -w '%{http_code} %{time_total}' $(curlargs "$v" small))
    if [ "${o%% *}" = 200 ]; then rec lat.new "$v" "$(awk -v t="${o#* }" 'BEGIN{printf "%.3f", t*1000}')"; else nf=$((nf+1)); fi
  done
  guard_end "lat.new.$v"
  [ $nf -gt 0 ] && fail "$v" "$nf of $LAT_N small requests failed"
  read -r -a ca <<< "$(curlargs "$v" small)"; url=${ca[-1]}; unset 'ca[-1]'
  urls=(); for i in $(seq $((LAT_N + 1))); do urls+=(-o /dev/null "$url"); done
  guard_begin
  nsx "$NA" curl -s -m 60 -w '%{http_code} %{time_total} %{num_connects}\n' "${ca[@]}" "${urls[@]}" > "$L/ka-$v.txt"
  guard_end "lat.ka.$v"
  awk 'NR>1 && $1==200 {printf "%.3f\n", $2*1000}' "$L/ka-$v.txt" | while read -r x; do rec lat.ka "$v" "$x"; done
  nc=$(awk '{s+=$3} END{print s+0}' "$L/ka-$v.txt")
  [ "$nc" -gt 1 ] && log "  $v: the kept-alive run opened $nc connections"
done

# ---------------------------------------------------------------- 4. throughput, CPU, memory under load
log "throughput: $RUNS x $BIG_MB MiB per variant, interleaved"
for rep in $(seq "$RUNS"); do
  for v in $VARIANTS; do
    variant_ok "$v" || { fail "$v" "tunnel down before download $rep"; continue; }
    mon="${PA[$v]:-} ${PB[$v]:-}"
    guard_begin
    c0=$(cputicks "$mon"); ca0=$(cputicks "${PA[$v]:-}"); t0=$(date +%s%N)
    # shellcheck disable=SC2046
    nsx "$NA" curl -s -m "$CURL_MAX" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' \
      $(curlargs "$v" big) > "$L/big.out" 2>"$L/big.err" & cp=$!
    : > "$L/rss-samples"
    if [ "$v" != direct ]; then
      for i in $(seq $((CURL_MAX * 10))); do
        kill -0 $cp 2>/dev/null || break
        stall_snap "$v" "download-$rep" "$i"
        echo "$(memsum "${PA[$v]}" VmRSS) $(memsum "${PB[$v]}" VmRSS)" >> "$L/rss-samples"; sleep 0.1
      done
    fi
    wait $cp
    c1=$(cputicks "$mon"); ca1=$(cputicks "${PA[$v]:-}")
    guard_end "tput.$v"
    read -r code size speed < "$L/big.out" || { code=0; size=0; speed=0; }
    if [ "$code" != 200 ] || [ "$size" -lt $((BIG_MB * 1048576)) ]; then
      fail "$v" "download $rep: http $code, $size of $((BIG_MB * 1048576)) bytes after $(( ($(date +%s%N) - t0) / 1000000 )) ms$(variant_ok "$v" || echo '; tunnel process gone')"
      diag "$v" "download-$rep"
      continue
    fi
    mb=$(awk -v s="$speed" 'BEGIN{printf "%.1f", s*8/1e6}')
    rec tput "$v" "$mb"
    if [ "$v" != direct ]; then
      rec cpu "$v" "$(awk -v d=$((c1 - c0)) -v k="$CLK" -v b="$size" 'BEGIN{printf "%.3f", d/k/(b/1e9)}')"
      rec cpu.A "$v" "$(awk -v d=$((ca1 - ca0)) -v k="$CLK" -v b="$size" 'BEGIN{printf "%.3f", d/k/(b/1e9)}')"
      rec cpu.B "$v" "$(awk -v d=$((c1 - c0 - ca1 + ca0)) -v k="$CLK" -v b="$size" 'BEGIN{printf "%.3f", d/k/(b/1e9)}')"
      awk 'BEGIN{a=0;b=0} {if ($1>a) a=$1; if ($2>b) b=$2} END{print a, b}' "$L/rss-samples" | {
        read -r a b; rec rss.load.A "$v" "$a"; rec rss.load.B "$v" "$b"; }
    fi
    log "  $v run $rep: $mb Mbit/s (foreign CPU ${G_PCT}%)"
  done
done
log "parallel: $PAR simultaneous downloads of $((BIG_MB / PAR)) MiB per variant"
for v in $VARIANTS; do
  variant_ok "$v" || { fail "$v" "tunnel down before the parallel downloads"; continue; }
  guard_begin
  t0=$(date +%s%N); cps=()
  for j in $(seq "$PAR"); do
    # shellcheck disable=SC2046
    nsx "$NA" curl -s -m "$CURL_MAX" -o /dev/null -w '%{http_code} %{size_download}\n' $(curlargs "$v" part) > "$L/par-$j.out" 2>&1 & cps+=($!)
  done
  : > "$L/rss-samples"
  for i in $(seq $((CURL_MAX * 10))); do
    n=0; for p in "${cps[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n+1)); done; [ $n = 0 ] && break
    [ "$v" != direct ] && { stall_snap "$v" parallel "$i"; echo "$(memsum "${PA[$v]}" VmRSS) $(memsum "${PB[$v]}" VmRSS)" >> "$L/rss-samples"; }
    sleep 0.1
  done
  wait "${cps[@]}"; t1=$(date +%s%N)
  guard_end "tput.par.$v"
  tot=0; bad=0
  for j in $(seq "$PAR"); do read -r code size < "$L/par-$j.out" || { code=0; size=0; }
    if [ "$code" = 200 ] && [ "$size" -ge $(( BIG_MB / PAR * 1048576 )) ]; then tot=$((tot + size)); else bad=$((bad + 1)); fi; done
  if [ $bad -gt 0 ]; then
    fail "$v" "$bad of $PAR parallel downloads incomplete ($(cat "$L"/par-*.out | tr '\n' ';'))$(variant_ok "$v" || echo '; tunnel process gone')"
    diag "$v" parallel
  else
    mb=$(awk -v b=$tot -v ns=$((t1 - t0)) 'BEGIN{printf "%.1f", b*8/(ns/1e9)/1e6}')
    rec tput.par "$v" "$mb"; log "  $v: $mb Mbit/s aggregate"
  fi
  [ "$v" != direct ] && awk 'BEGIN{a=0;b=0} {if ($1>a) a=$1; if ($2>b) b=$2} END{print a, b}' "$L/rss-samples" | {
    read -r a b; rec rss.par.A "$v" "$a"; rec rss.par.B "$v" "$b"; }
done
for v in $VARIANTS; do
  [ "$v" = direct ] && continue
  variant_ok "$v" || { fail "$v" "tunnel process gone at the end of the run"; [ "${v%%-*}" = km ] && km_log_tail "${v#*-}"; continue; }
  rec rss.hwm.A "$v" "$(memsum "${PA[$v]}" VmHWM)"; rec rss.hwm.B "$v" "$(memsum "${PB[$v]}" VmHWM)"
done
sleep 2     # idle again: does the memory go back?
for v in $VARIANTS; do
  [ "$v" = direct ] && continue
  variant_ok "$v" || continue
  rec rss.after.A "$v" "$(memsum "${PA[$v]}" VmRSS)"; rec rss.after.B "$v" "$(memsum "${PB[$v]}" VmRSS)"
done
for v in $VARIANTS; do [ "${v%%-*}" = km ] && "$KM" status --dir "$W/km-A-${v#*-}" --json > "$L/status-$v.json" 2>&1; done

# ---------------------------------------------------------------- 5. report
# shellcheck disable=SC2046
stop $(for v in $VARIANTS; do echo "${PA[$v]:-}"; done) ${PB[km-aes]:-} ${PB[km-chacha]:-}
grep -hiE 'error|warn|abort|assert|sanitizer' "$L"/km-*.log 2>/dev/null | sort | uniq -c | sort -rn | head -20 > "$R/km-log-problems.txt"
{
  echo "cmd	$0 $*"
  echo "env	BIG_MB=$BIG_MB RUNS=$RUNS LAT_N=$LAT_N SETUP_N=$SETUP_N HF_RUNS=$HF_RUNS PAR=$PAR"
  echo "date	$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu	$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo) ($NCPU cores$(grep -qw aes /proc/cpuinfo && echo ', AES-NI'))"
  echo "kernel	$(uname -r)"
  echo "os	$(. /etc/os-release; echo "$PRETTY_NAME")"
  if [ -n "${KM_REV_DESC:-}" ]; then echo "keymesh	$("$KM" --version 2>&1 | head -1); $KM_REV_DESC"
  else echo "keymesh	$("$KM" --version 2>&1 | head -1); $KM (prebuilt)"; fi
  echo "openssh	$(ssh -V 2>&1)"
  echo "curl	$(curl --version | head -1 | cut -d' ' -f1-2); nginx $(nginx -v 2>&1 | sed 's/.*\///')"
  echo "maxforeign	$G_MAX"
} > "$R/meta.tsv"
python3 "$HERE/report.py" "$R" ${PREV:+--prev "$PREV"} > "$R/report.md" || { echo "mesh.sh: report failed" >&2; exit 1; }
cat "$R/report.md"
if [ -n "$DOC" ]; then
  python3 "$HERE/report.py" --into "$DOC" "$R/report.md" && log "results written to $DOC"
fi
exit 0
