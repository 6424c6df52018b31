#!/usr/bin/env bash
# TUN egress with the real daemon: two nodes in two network namespaces on one veth link, each
# with its TUN device. From A, stock programs reach B by VIP and by FQDN (A's resolver points
# at A's keymesh DNS on its VIP): curl to an HTTP server on B, stock ssh to B's own sshd,
# ping -6, a 1 GiB transfer checked by sha256, 2,000 concurrent connections. Unknown VIPs and
# closed ports fail fast; hostile packets are dropped and counted; the device, its address
# and its route are gone after the daemon exits, SIGKILL included.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "tun: needs root for network namespaces and TUN"; exit 1; }
[ -c /dev/net/tun ] || { echo "tun: no /dev/net/tun"; exit 1; }
veth_pair tn || exit 1
# 2,000 connections: B's daemon holds a socket per stream.
ulimit -n "$(ulimit -Hn)"
A=$T/a B=$T/b
for d in "$A" "$B"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
field() { "$KM" id --dir "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
IDA=$(field "$A" node_id) IDB=$(field "$B" node_id)
VIPA=$(field "$A" vip) VIPB=$(field "$B" vip)
FQDNB=$(field "$B" fqdn)
# A: TUN, DNS on its own VIP (the namespace's resolver), B as a peer.
cat >"$A/keymesh.conf" <<EOF
[mesh]
listen = 192.0.2.1:15022
max_channels = 8192
[socks5]
enabled = false
[http]
enabled = false
[mdns]
enabled = false
[dns]
listen = [$VIPA]:53
[tun]
enabled = true
name = kmtunA
max_flows = 2500
[peer bee]
node = $IDB
address = 192.0.2.2:15022
EOF
cat >"$B/keymesh.conf" <<EOF
[mesh]
listen = 192.0.2.2:15022
max_channels = 8192
expose = 8000, 22, 9000, 9001, 9002
[socks5]
enabled = false
[http]
enabled = false
[dns]
enabled = false
[mdns]
enabled = false
[peer ay]
node = $IDA
EOF

# B's services: a web server, its own sshd, a sink and a source for the bulk transfer.
mkdir -p "$T/www" && echo hello-tun > "$T/www/index.html"
ip netns exec "$NB" python3 -m http.server 8000 --bind 127.0.0.1 --directory "$T/www" >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$NB" python3 "$(dirname "$0")/tun_helper.py" echo 127.0.0.1 9002 &
PIDS+=($!)
ssh-keygen -q -t ed25519 -N '' -f "$T/sshd_host" && ssh-keygen -q -t ed25519 -N '' -f "$T/user"
mkdir -p "$T/sshd" && cp "$T/user.pub" "$T/sshd/authorized_keys"
cat >"$T/sshd_config" <<EOF
ListenAddress 127.0.0.1:22
HostKey $T/sshd_host
AuthorizedKeysFile $T/sshd/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $T/sshd.pid
EOF
mkdir -p /run/sshd
ip netns exec "$NB" /usr/sbin/sshd -D -f "$T/sshd_config" -E "$T/sshd.log" &
PIDS+=($!)
check "B's web server and sshd are up" waitfor 10 bash -c \
    "ip netns exec $NB curl -sf http://127.0.0.1:8000/index.html >/dev/null && ip netns exec $NB bash -c 'exec 3<>/dev/tcp/127.0.0.1/22'"

ip netns exec "$NB" "$KM" up --dir "$B" >"$B.log" 2>&1 &
PB=$!; PIDS+=("$PB")
ip netns exec "$NA" "$KM" up --dir "$A" >"$A.log" 2>&1 &
PA=$!; PIDS+=("$PA")
check "both daemons answer" waitfor 10 sh -c "ip netns exec $NA '$KM' status --dir '$A' && ip netns exec $NB '$KM' status --dir '$B'"
check "A's TUN device carries A's VIP" sh -c "ip -n $NA -6 addr show dev kmtunA | grep -q '$VIPA/16'"
check "... and the mesh prefix is routed into it" sh -c "ip -n $NA -6 route show dev kmtunA | grep -q '^fd6b::/16'"
check "... and queues up to 2,048 packets for the daemon" sh -c "ip -n $NA link show kmtunA | grep -q 'qlen 2048'"
check "B has no TUN device (not enabled)" sh -c "! ip -n $NB link show kmtunA 2>/dev/null"

inA() { ip netns exec "$NA" "$@"; }
check "curl http://[VIP]:8000/ reaches B's web server" \
    test "$(inA curl -s -m 10 "http://[$VIPB]:8000/index.html")" = hello-tun
# The namespace's resolver is keymesh DNS on A's VIP (`ip netns exec` mounts
# /etc/netns/NAME/resolv.conf over /etc/resolv.conf).
mkdir -p "/etc/netns/$NA" && echo "nameserver $VIPA" >"/etc/netns/$NA/resolv.conf"
check "keymesh DNS answers on A's VIP" sh -c \
    "ip netns exec $NA dig +short +time=2 +tries=1 @$VIPA AAAA $FQDNB | grep -qx '$VIPB'"
check "curl http://<node-id>.mesh.internal:8000/ with the resolver on A's VIP" \
    test "$(inA curl -s -m 10 http://$FQDNB:8000/index.html)" = hello-tun
check "ping -6 B's VIP" inA ping -6 -c 3 -i 0.2 -W 2 "$VIPB"
check "stock ssh to B's own sshd through the VIP" test "$(inA ssh -F /dev/null -i "$T/user" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
    -o ConnectTimeout=10 root@"$VIPB" echo ssh-over-tun 2>/dev/null)" = ssh-over-tun

# Unknown VIPs and closed ports fail fast, not after a timeout.
UNKNOWN=fd6b:1:2:3:4:5:6:7
t0=$(date +%s%N)
inA curl -s -m 10 "http://[$UNKNOWN]:8000/" >/dev/null 2>&1; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "an unknown VIP fails at once (curl exit $rc in $ms ms)" test "$rc" = 7 -a "$ms" -lt 2000
check "ping -6 an unknown VIP gets 'unreachable', not silence" \
    sh -c "ip netns exec $NA ping -6 -c 1 -W 3 $UNKNOWN 2>&1 | grep -qi unreachable"
t0=$(date +%s%N)
inA curl -s -m 10 "http://[$VIPB]:8001/" >/dev/null 2>&1; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "an unexposed port is refused at once (curl exit $rc in $ms ms)" test "$rc" = 7 -a "$ms" -lt 2000

# 1 GiB through the TUN, both directions through lwIP and the mesh, checked by sha256.
ip netns exec "$NB" python3 "$(dirname "$0")/tun_helper.py" sink 127.0.0.1 9000 "$T/sink.sha" &
PIDS+=($!)
ip netns exec "$NB" python3 "$(dirname "$0")/tun_helper.py" source 127.0.0.1 9001 1073741824 &
PIDS+=($!)
sleep 0.3
SENT=$(head -c 1073741824 /dev/urandom | inA python3 "$(dirname "$0")/tun_helper.py" send "$VIPB" 9000)
check "1 GiB to B over the TUN arrives intact" waitfor 10 sh -c "test -n '$SENT'" && check "... sha256 matches" waitfor 10 sh -c "test -s '$T/sink.sha' && test \"\$(cat '$T/sink.sha')\" = '$SENT'"
GOT=$(inA python3 "$(dirname "$0")/tun_helper.py" fetch "$VIPB" 9001)
check "1 GiB from B over the TUN arrives intact" test "$GOT" = "$(head -c 1073741824 /dev/zero | sha256sum | cut -d' ' -f1)"

MANY=$(inA python3 "$(dirname "$0")/tun_helper.py" many "$VIPB" 9002 2000); rc=$?
check "2,000 concurrent connections through the TUN all complete ($MANY)" test "$rc" = 0
[ "$rc" = 0 ] || ip netns exec "$NA" "$KM" status --dir "$A" --json | python3 -c '
import json,sys; t=json.load(sys.stdin)["tun"]; print("    tun:", {k: v for k, v in t.items() if k != "drops"}, t["drops"])'

# Hostile packets written straight onto A's device from inside its namespace: dropped and
# counted, never a crash.
inA python3 "$(dirname "$0")/tun_helper.py" hostile kmtunA "$VIPA" "$VIPB"
check "malformed packets are dropped and counted" sh -c "ip netns exec $NA '$KM' status --dir '$A' --json | \
    python3 -c 'import json,sys; t=json.load(sys.stdin)[\"tun\"]; sys.exit(0 if t[\"dropped\"] >= 5 else 1)'"
check "... and the daemon still serves" test "$(inA curl -s -m 10 "http://[$VIPB]:8000/index.html")" = hello-tun

# The flow limit: a SYN flood beyond max_flows is refused while an open connection goes on.
check "a SYN flood past max_flows is refused; a live connection keeps working" \
    inA python3 "$(dirname "$0")/tun_helper.py" flood "$VIPB" 9002 kmtunA "$VIPA" 5000
check "... and counted" sh -c "ip netns exec $NA '$KM' status --dir '$A' --json | \
    python3 -c 'import json,sys; t=json.load(sys.stdin)[\"tun\"]; sys.exit(0 if t[\"flows_over_limit\"] >= 1 else 1)'"

# Ping is a real round trip: with B's daemon down, B's VIP stops answering.
kill -TERM "$PB"; wait "$PB" 2>/dev/null
check "with B's daemon down, ping -6 B's VIP gets no reply" sh -c "! ip netns exec $NA ping -6 -c 1 -W 3 $VIPB"
ip netns exec "$NB" "$KM" up --dir "$B" >"$B.2.log" 2>&1 &
PB=$!; PIDS+=("$PB")
check "... and answers again when B is back" waitfor 15 ip netns exec "$NA" ping -6 -c 1 -W 2 "$VIPB"

ip netns exec "$NA" "$KM" status --dir "$A" --json | python3 -c 'import json,sys; print("    tun:", json.dumps(json.load(sys.stdin)["tun"]))'
kill -TERM "$PA"; n=200
while [ "$n" -gt 0 ] && kill -0 "$PA" 2>/dev/null; do sleep 0.05; n=$((n - 1)); done
wait "$PA"; rc=$?
check "A exits cleanly (exit $rc)" test "$rc" = 0
check "the device is gone after exit" sh -c "! ip -n $NA link show kmtunA 2>/dev/null"
check "... and so is the route" sh -c "! ip -n $NA -6 route show | grep -q '^fd6b::/16'"

# Crash safety: SIGKILL leaves nothing behind and the next start works.
ip netns exec "$NA" "$KM" up --dir "$A" >"$A.2.log" 2>&1 &
PA=$!; PIDS+=("$PA")
check "A restarts with its TUN" waitfor 10 ip -n "$NA" link show kmtunA
kill -KILL "$PA"; wait "$PA" 2>/dev/null
check "after SIGKILL the device is gone" waitfor 5 sh -c "! ip -n $NA link show kmtunA 2>/dev/null"
ip netns exec "$NA" "$KM" up --dir "$A" >"$A.3.log" 2>&1 &
PA=$!; PIDS+=("$PA")
check "... and the next start works" waitfor 10 sh -c \
    "test \"\$(ip netns exec $NA curl -s -m 5 http://[$VIPB]:8000/index.html)\" = hello-tun"
kill -TERM "$PA"; wait "$PA" 2>/dev/null

# Without CAP_NET_ADMIN: a clear error, not a crash.
C=$T/c
"$KM" init --dir "$C" >/dev/null
printf '[tun]\nenabled = true\n[socks5]\nenabled = false\n[http]\nenabled = false\n[dns]\nenabled = false\n[mdns]\nenabled = false\n' >"$C/keymesh.conf"
setpriv --bounding-set -net_admin "$KM" up --dir "$C" >"$C.log" 2>&1; rc=$?
check "without CAP_NET_ADMIN up fails (exit $rc) with a clear error" sh -c \
    "test $rc -ne 0 && grep -q 'CAP_NET_ADMIN' '$C.log'"
if [ "$FAIL" -gt 0 ]; then
    for f in "$A.log" "$B.log" "$A.2.log" "$A.3.log"; do echo "--- $f"; tail -n 15 "$f" 2>/dev/null; done
fi
finish
