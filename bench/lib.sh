# bench/lib.sh -- helpers shared by the benchmark scripts (sourced, bash).
#
# Adapted from the team's peers.sh baseline script: two network namespaces joined by a veth
# that the script creates and deletes, processes started in the background and stopped by PID,
# CPU ticks and memory read from /proc, and a guard that waits for a quiet machine and records
# how much CPU other processes used during each measurement.
#
# The caller sets: W (work dir), R (results dir), NA/NB (namespace names), IPA/IPB, VETH_A/VETH_B.
# Every wait is bounded; cleanup() removes namespaces, kills our PIDs, deletes W unless KEEP=1.

CLK=$(getconf CLK_TCK)
NCPU=$(nproc)
PIDS=()            # every background process we started (stopped by PID on exit)

log(){ printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
nsx(){ local ns=$1; shift; if [ "$ns" = - ]; then "$@"; else ip netns exec "$ns" "$@"; fi; }

# bgstart LOGFILE CMD... : run in the background; LASTPID is the command itself
# (`ip netns exec` and `env` exec their argument, so the PID stays the same).
bgstart(){ local lf=$1; shift; "$@" >"$lf" 2>&1 & LASTPID=$!; PIDS+=("$LASTPID"); }

# stop PID... : TERM, wait up to 5 s each, then KILL; reap; forget them.
stop(){
  local p q i keep=()
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for p in "$@"; do
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  for q in "${PIDS[@]}"; do for p in "$@"; do [ "$q" = "$p" ] && continue 2; done; keep+=("$q"); done
  PIDS=("${keep[@]}")
}
# alive PID : still running and not a zombie
alive(){ [ -e "/proc/$1/stat" ] && ! awk '{sub(/^.*\) /,""); exit ($1=="Z"?0:1)}' "/proc/$1/stat" 2>/dev/null; }

# waitfor SECONDS CMD... : poll every 20 ms
waitfor(){ local t=$(( $1 * 50 )); shift; while (( t-- > 0 )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.02; done; return 1; }
listening(){ nsx "$1" ss -Hltn "sport = :$2" | grep -q .; }
descendants(){ local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }

# memkb PID FIELD : kB of VmRSS / VmHWM from /proc/PID/status
memkb(){ local v; v=$(awk -v f="$2:" '$1==f{print $2}' "/proc/$1/status" 2>/dev/null); echo "${v:-0}"; }
# memsum "PID ..." FIELD : summed kB
memsum(){ local s=0 p; for p in $1; do s=$((s + $(memkb "$p" "$2"))); done; echo $s; }
# cputicks "PID ..." : summed utime+stime (clock ticks) from /proc/PID/stat
cputicks(){ local t=0 p v; for p in $1; do
  v=$(awk '{sub(/^.*\) /,""); print $12+$13}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + ${v:-0})); done; echo $t; }

# ---------------------------------------------------------------- contention guard
# The machine is shared (2 cores, other people build and test here). Before each measurement
# wait up to QUIET_TIMEOUT s for the machine to be under QUIET_PCT % busy, and record the CPU
# share of processes outside this script's process tree during the measurement (G_PCT).
QUIET_PCT=${QUIET_PCT:-15}; QUIET_TIMEOUT=${QUIET_TIMEOUT:-10}
foreign_ticks(){
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v me=$$ '{ p = $1; l = $0; sub(/^.*\) /, "", l); split(l, f, " ")
      pp[p] = f[2]; t[p] = f[12] + f[13] }
    END { for (p in pp) { q = p; n = 0; while (q > 1 && q != me && n++ < 64) q = pp[q]
            if (q != me && pp[p] != 2 && p != 2) s += t[p] }
          print s + 0 }'; }
quiet_wait(){
  local t0=$SECONDS a b pct
  while :; do
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat); sleep 0.5; b=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
    pct=$(( (b - a) * 100 * 2 / (CLK * NCPU) ))
    [ $pct -lt "$QUIET_PCT" ] && return 0
    (( SECONDS - t0 >= QUIET_TIMEOUT )) && { log "  machine still ${pct}% busy: measuring anyway"; return 0; }
    log "  waiting: machine ${pct}% busy"; sleep 2
  done
}
G_T0=0; G_F0=0; G_PCT=0; G_MAX=0
guard_begin(){ quiet_wait; G_T0=$(date +%s%N); G_F0=$(foreign_ticks); }
guard_end(){ # WHAT : sets G_PCT, appends to $R/contention.tsv
  local f1 el d; f1=$(foreign_ticks); el=$(( ($(date +%s%N) - G_T0) / 1000000 ))
  d=$(( f1 - G_F0 )); [ $d -lt 0 ] && d=0
  G_PCT=0; [ $el -gt 0 ] && G_PCT=$(( d * 1000 * 100 / CLK / el / NCPU ))
  [ $G_PCT -gt $G_MAX ] && G_MAX=$G_PCT
  printf '%s\t%s\n' "$1" "$G_PCT" >> "$R/contention.tsv"
}

# ---------------------------------------------------------------- namespaces
NETNS_OURS=0
netns_down(){ # kill what still runs inside our namespaces (only we start processes there), delete them
  local n p
  for n in "$NA" "$NB"; do
    ip netns list 2>/dev/null | grep -qw "$n" || continue
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$n" 2>/dev/null
  done
  return 0
}
netns_up(){
  netns_down    # leftovers of an interrupted earlier run (same names)
  NETNS_OURS=1
  log "creating netns $NA/$NB, veth $IPA <-> $IPB"
  ip netns add "$NA" && ip netns add "$NB" || return 1
  ip link add "$VETH_A" type veth peer name "$VETH_B" || return 1
  ip link set "$VETH_A" netns "$NA"; ip link set "$VETH_B" netns "$NB"
  ip -n "$NA" addr add "$IPA/24" dev "$VETH_A"; ip -n "$NB" addr add "$IPB/24" dev "$VETH_B"
  ip -n "$NA" link set lo up; ip -n "$NB" link set lo up
  ip -n "$NA" link set "$VETH_A" up; ip -n "$NB" link set "$VETH_B" up
  waitfor 10 ip netns exec "$NA" ping -c1 -W1 "$IPB"
}

# ---------------------------------------------------------------- OpenSSH (from peers.sh)
ssh_setup(){ # SSHD dir: host + user ed25519 keys, sshd_config
  mkdir -p "$SSHD" /run/sshd; chmod 700 "$SSHD"
  ssh-keygen -q -t ed25519 -N '' -f "$SSHD/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -f "$SSHD/id_ed25519"
  cp "$SSHD/id_ed25519.pub" "$SSHD/authorized_keys"
  echo "$IPB $(cut -d' ' -f1,2 "$SSHD/host_ed25519.pub")" > "$SSHD/known_hosts"
  cat > "$SSHD/sshd_config" <<EOF
HostKey $SSHD/host_ed25519
PidFile none
AuthorizedKeysFile $SSHD/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
AllowTcpForwarding yes
PrintMotd no
PrintLastLog no
LogLevel ERROR
EOF
}
# start_sshd LOGFILE PORT : sshd in NB. The login user's ~/.bashrc is hidden (bind-mounted empty
# file in a private mount namespace of this sshd only): Debian's bash sources it for
# `ssh host cmd`, and a heavy one would be measured instead of SSH. SSH_HOST_RC=1 keeps it.
start_sshd(){
  local lf=$1 port=$2 rc
  rc=$(getent passwd root | cut -d: -f6)/.bashrc
  if [ "${SSH_HOST_RC:-0}" = 1 ] || [ ! -f "$rc" ]; then
    bgstart "$lf" ip netns exec "$NB" /usr/sbin/sshd -D -e -f "$SSHD/sshd_config" -o "ListenAddress=$IPB:$port"
  else
    : > "$SSHD/empty_bashrc"
    bgstart "$lf" ip netns exec "$NB" unshare -m --propagation private sh -c \
      "mount --bind '$SSHD/empty_bashrc' '$rc' && exec /usr/sbin/sshd -D -e -f '$SSHD/sshd_config' -o ListenAddress=$IPB:$port"
  fi
}
sshopt(){ echo "-F /dev/null -i $SSHD/id_ed25519 -o UserKnownHostsFile=$SSHD/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR"; }

# ---------------------------------------------------------------- statistics
# stats FILE : "n median p90 min max" of the numbers in FILE (one per line)
stats(){ python3 - "$1" <<'EOF'
import sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v: print("0 - - - -"); sys.exit()
def q(p):  # linear interpolation between closest ranks
    k = (len(v) - 1) * p; f = int(k); c = min(f + 1, len(v) - 1); return v[f] + (v[c] - v[f]) * (k - f)
print(len(v), *("%.6g" % x for x in (q(0.5), q(0.9), v[0], v[-1])))
EOF
}
