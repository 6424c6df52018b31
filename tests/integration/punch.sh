#!/usr/bin/env bash
# TCP hole punching through a gateway (docs/NAT.md "Hole punching"), in nat.sh's topology
# without miniupnpd:
#
#   "public" segment 192.0.2.0/24 (bridge in PUB; the gateway node G at 192.0.2.1)
#     |- R1 wan 192.0.2.11 : nftables masquerade; LAN 198.51.100.0/24, node A 198.51.100.2
#     '- R2 wan 192.0.2.12 : nftables masquerade; LAN 203.0.113.0/24, node B 203.0.113.2
#
# Port mapping off; A and B register with G. Shown: B reaches A through the relay first;
# B's background upgrade asks G to coordinate a punch, both connect from their mesh ports to
# each other's punch address, and within seconds B's connection to A is `punched` (A's host
# key checked as on every path); a transfer over it matches its sha256 and G relays nothing
# more. Then R2 switches to `masquerade random` (a symmetric NAT): the punch cannot work,
# B stays relayed with no error, and streams still work. Last, nobody but A's gateway gets
# gateway traffic to A: OpenSSH through the relay (as B) is refused the relayed@keymesh and
# register@keymesh channels, and a rogue gateway at G's address is refused on its host key
# (no registration, so no reflexive address or punch from it). Then both routers answer
# unsolicited SYNs with resets and B is 20 ms beyond R2 (tests/integration/delay_link.py):
# G times the two PUNCH frames to arrive together, and the first punch works.
#
# Only documentation-range addresses are configured on interfaces.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "punch: needs root for network namespaces"; exit 1; }
command -v nft >/dev/null || { echo "punch: needs nft (scripts/deps.sh)"; exit 1; }
source "$(dirname "$0")/nat_topo.sh"
trap 'nat_topo_down; cleanup' EXIT
nat_topo_up km-pun-$$ drop-syn || exit 1
check "A reaches the public segment through R1" ip netns exec "$NA" ping -c1 -W2 192.0.2.1 >/dev/null
check "B reaches the public segment through R2" ip netns exec "$NB" ping -c1 -W2 192.0.2.1 >/dev/null

G=$T/g A=$T/a B=$T/b
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
for d in "$A" "$B"; do
    cat >"$d/keymesh.conf" <<EOF
$common
[mesh]
listen = 0.0.0.0:15022
expose = 8000
[socks5]
listen = 127.0.0.1:1080
[nat]
portmap = off
gateway = g
[peer g]
node = $IG
address = 192.0.2.1:15022
[peer a]
node = $IA
[peer b]
node = $IB
EOF
done
mkdir -p "$T/wa" && echo from-a >"$T/wa/i"
ip netns exec "$NA" python3 -m http.server 8000 --bind 127.0.0.1 --directory "$T/wa" >/dev/null 2>&1 &
PIDS+=($!)

up() {
    ip netns exec "$1" "$KM" up --dir "$2" -l debug >>"$2.log" 2>&1 &
    UPPID=$!
    PIDS+=("$UPPID")
    waitfor 10 ip netns exec "$1" "$KM" status --dir "$2"
}
down() {
    local n=200
    kill -TERM "$1" 2>/dev/null
    while [ "$n" -gt 0 ] && kill -0 "$1" 2>/dev/null; do sleep 0.05; n=$((n - 1)); done
    kill -KILL "$1" 2>/dev/null
    wait "$1"
}
st() { ip netns exec "$1" "$KM" status --dir "$2" --json; }
jq_() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
regs() { st "$1" "$2" | jq_ "d['nat']['registered']"; }
reg_is() { test "$(regs "$1" "$2")" = "$3"; }
gwf() { st "$PUB" "$G" | jq_ "d['nat']['gateway']['$1']"; }
gw_relayed_is() { test "$(gwf relayed)" = "$1"; }
both_registered() { reg_is "$NA" "$A" 1 && reg_is "$NB" "$B" 1; }
get() { ip netns exec "$1" curl -s -m 8 --socks5-hostname 127.0.0.1:1080 "http://$3.mesh.internal:8000/i"; }
reach_a() { test "$(get "$NB" "$B" "$IA")" = from-a; }
relay_seen() { ip netns exec "$1" "$KM" resolve --dir "$2" --json "$3.mesh.internal" | grep -q '"kind": "relay"'; }
peer_path() { ip netns exec "$1" "$KM" peers --dir "$2" --json | python3 -c "import json,sys; print(([p.get('path','') for p in json.load(sys.stdin) if p['node_id']=='$3'] + [''])[0])"; }
path_is() { test "$(peer_path "$NB" "$B" "$IA")" = "$1"; }

check "G starts as a gateway" up "$PUB" "$G"; PG=$UPPID
check "A starts" up "$NA" "$A"; PA=$UPPID
check "B starts" up "$NB" "$B"; PB=$UPPID
check "A registers with G" waitfor 15 reg_is "$NA" "$A" 1
check "B registers with G" waitfor 15 reg_is "$NB" "$B" 1
check "B learns A's relay path" waitfor 15 relay_seen "$NB" "$B" "$IA"

# 1. Endpoint-independent masquerade: relayed first, then punched.
t0=$(date +%s%N)
check "B reaches A (through the relay first)" waitfor 15 reach_a
check "B's connection to A becomes punched" waitfor 30 path_is punched
t1=$(date +%s%N)
echo "    relay -> punched $(( (t1 - t0) / 1000000 )) ms after B's first stream to A"
ip netns exec "$NB" "$KM" peers --dir "$B" | sed 's/^/    /'
check "G coordinated it" grep -q "coordinating a hole punch" "$G.log"
check "B logged the move" grep -q "moved from the relay to a punched connection" "$B.log"
grep -m1 "punched connection" "$B.log" | sed 's/^/    /'
check "keymesh ping A from B answers on the punched path" sh -c "ip netns exec $NB '$KM' ping --dir '$B' -n 2 --json $IA | grep -q '\"path\": \"punched\"'"
check "A's side of it is direct" waitfor 10 sh -c "ip netns exec $NA '$KM' peers --dir '$A' --json | grep -q '\"path\": \"direct\"'"
REL0=$(gwf relayed_total)
MB=${KM_PUNCH_MB:-64}
head -c "$((MB << 20))" /dev/urandom >"$T/wa/big"
WANT=$(sha256sum <"$T/wa/big" | cut -d' ' -f1)
GOT=$(ip netns exec "$NB" curl -s -m 120 --socks5-hostname 127.0.0.1:1080 "http://$IA.mesh.internal:8000/big" | sha256sum | cut -d' ' -f1)
check "$MB MiB over the punched path, sha256 matches" test "$GOT" = "$WANT"
check "G relayed nothing for it" test "$(gwf relayed_total)" = "$REL0"
check "B closed its relayed session to A" waitfor 10 grep -q "(relay via .*: closed" "$B.log"
check "A closed its end of it" waitfor 10 grep -q "from relay via .*: closed" "$A.log"
check "G ended its splice of the retired relayed session" waitfor 10 gw_relayed_is 0
rm -f "$T/wa/big"
check "B stops cleanly" down "$PB"
check "A stops cleanly" down "$PA"

# 2. Symmetric NAT on R2 (masquerade random): the punch fails, traffic stays relayed.
# B moves to another mesh port so no conntrack entry of part 1 (whose mapping kept the
# port) is reused for the punch.
nat_rules "$R2" "masquerade random"
sed -i 's/^listen = 0.0.0.0:15022$/listen = 0.0.0.0:15023/' "$B/keymesh.conf"
mv "$B.log" "$B-1.log"
check "A starts again" up "$NA" "$A"; PA=$UPPID
check "B starts again behind masquerade random" up "$NB" "$B"; PB=$UPPID
check "both register" waitfor 15 both_registered
check "B learns A's relay path" waitfor 15 relay_seen "$NB" "$B" "$IA"
check "B reaches A through the relay" waitfor 15 reach_a
n0=$(grep -c "coordinating a hole punch" "$G.log")
check "G coordinates a punch for B again" waitfor 20 sh -c "[ \$(grep -c 'coordinating a hole punch' '$G.log') -gt $n0 ]"
sleep 5 # past the punch window (3 s)
check "B's connection to A stays relayed" path_is relay
check "B logged no error for it" sh -c "! grep -E 'WARN|ERROR' '$B.log' | grep -qi punch"
check "streams still work through the relay" reach_a

# 3. Gateway traffic from anyone but A's gateway is refused. (a) Stock OpenSSH in B's LAN
# with B's node key, through G's relay to A's SSH server (end to end: A's host key checked
# by ssh): a direct-tcpip to A's exposed port works, but the channels that carry relayed
# sessions and gateway frames (relayed@keymesh, register@keymesh) are refused, B not being
# A's gateway and A not being a gateway.
kh() { "$KM" id --dir "$1" --known-hosts | sed -E "s/^[^ ]+ /$2 /"; }
{ kh "$G" g; kh "$A" a; } >"$T/kh"
SSHO="-F /dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 -o IdentitiesOnly=yes -o UserKnownHostsFile=$T/kh -i $B/node.key -l keymesh"
PROXY="ssh $SSHO -o HostKeyAlias=g -p 15022 -W $IA.relay@keymesh:1 192.0.2.1"
# via_relay TARGET:PORT: ssh -W to A through the relay; stdout to $T/w.out, stderr $T/w.err.
via_relay() {
    printf 'GET /i HTTP/1.0\r\n\r\n' | ip netns exec "$NB" timeout 20 ssh $SSHO \
        -o HostKeyAlias=a -o ProxyCommand="$PROXY" -W "$1" a >"$T/w.out" 2>"$T/w.err"
}
via_relay localhost:8000
check "OpenSSH from B reaches A's web server through G's relay (exit $?)" grep -q from-a "$T/w.out"
expect_exit 255 "... a relayed@keymesh channel from B is refused" via_relay relayed@keymesh:1
check "... ssh says so" grep -q "administratively prohibited" "$T/w.err"
expect_exit 255 "... a register@keymesh channel is refused" via_relay register@keymesh:1
check "... ssh says so" grep -q "administratively prohibited" "$T/w.err"

# (b) A rogue gateway at G's address (its own key, gateway on, A and B allowed to register):
# A and B refuse it on the host key, so it never gets to tell them a reflexive address or
# send them a punch; when G is back they register with it again.
M=$T/m
"$KM" init --dir "$M" >/dev/null
cp "$G/keymesh.conf" "$M/keymesh.conf"
n_hk=$(grep -c 'host key does not match' "$A.log")
n_ref=$(grep -c 'it sees us at' "$A.log")
check "G stops" down "$PG"
check "the rogue gateway starts at G's address" up "$PUB" "$M"; PM=$UPPID
check "A refuses the rogue on its host key" waitfor 15 sh -c "[ \$(grep -c 'host key does not match' '$A.log') -gt $n_hk ]"
check "B refuses the rogue on its host key" waitfor 15 grep -q 'host key does not match' "$B.log"
sleep 2
check "A is registered nowhere" reg_is "$NA" "$A" 0
check "B is registered nowhere" reg_is "$NB" "$B" 0
check "the rogue registered nobody" sh -c "! grep -q 'registered from' '$M.log'"
check "the rogue coordinated no punch" sh -c "! grep -q 'coordinating a hole punch' '$M.log'"
check "A learned no reflexive address from it" test "$(grep -c 'it sees us at' "$A.log")" = "$n_ref"
check "the rogue stops" down "$PM"
check "G starts again" up "$PUB" "$G"; PG=$UPPID
check "A registers with G again" waitfor 15 reg_is "$NA" "$A" 1
check "B registers with G again" waitfor 15 reg_is "$NB" "$B" 1
check "B reaches A through the relay again" waitfor 15 reach_a

# 4. Routers that answer unsolicited SYNs with resets, and B 20 ms (each way) beyond its
# router's WAN while A sits next to G. Were both PUNCH frames sent at once, A's would arrive
# first, A's SYN would reach R2 before B's left it, R2 would reset it and keep that flow
# closed, and B's mapping could not keep its port. G holds A's frame back by the difference
# of the two sessions' one-way times (half of each smoothed RTT), so the SYNs leave together
# and the first punch works.
check "B stops" down "$PB"
check "A stops" down "$PA"
NAT_FIREWALL=open
nat_rules "$R1" masquerade && nat_rules "$R2" masquerade
check "R2's WAN is 20 ms from the public segment" nat_delay "$R2" 20
sed -i 's/^listen = 0.0.0.0:15022$/listen = 0.0.0.0:15024/' "$A/keymesh.conf"
sed -i 's/^listen = 0.0.0.0:15023$/listen = 0.0.0.0:15025/' "$B/keymesh.conf"
mv "$A.log" "$A-3.log" && mv "$B.log" "$B-3.log"
n0=$(grep -c "coordinating a hole punch" "$G.log")
check "A starts again behind a resetting router" up "$NA" "$A"; PA=$UPPID
check "B starts again behind a resetting router, 20 ms out" up "$NB" "$B"; PB=$UPPID
check "both register" waitfor 15 both_registered
check "B learns A's relay path" waitfor 15 relay_seen "$NB" "$B" "$IA"
check "B reaches A through the relay" waitfor 15 reach_a
check "B's connection to A becomes punched" waitfor 20 path_is punched
coord=$(grep "coordinating a hole punch" "$G.log" | tail -n +$((n0 + 1)))
echo "$coord" | sed 's/^/    /'
check "... at the first punch G coordinated" test "$(echo "$coord" | grep -c .)" = 1
held=$(echo "$coord" | sed -nE 's/.*held ([0-9]+) \/ ([0-9]+) ms.*/\1 \2/p')
check "G held A's frame back by B's extra one-way time, about 20 ms ($held)" \
    sh -c "set -- $held; [ \"\$1\" = 0 ] && [ \"\$2\" -ge 10 ] && [ \"\$2\" -le 60 ]"
ping_min() { ip netns exec "$NB" "$KM" ping --dir "$B" -n 3 --json "$IA" | jq_ "'%s %d' % (d['path'], d['min_ms'])"; }
PM3=$(ping_min)
check "keymesh ping on the punched path shows the 40 ms round trip ($PM3)" \
    sh -c "set -- $PM3; [ \"\$1\" = punched ] && [ \"\$2\" -ge 40 ]"

check "B stops cleanly" down "$PB"
check "A stops cleanly" down "$PA"
check "G stops cleanly" down "$PG"
if [ "$FAIL" -gt 0 ]; then
    for f in "$G.log" "$A-3.log" "$A.log" "$B-1.log" "$B-3.log" "$B.log" "$M.log"; do
        echo "--- $f"
        grep -v 'debug' "$f" | tail -30
        grep -i 'punch' "$f" | tail -20
        grep -A40 'ERROR: AddressSanitizer' "$f" | grep -E 'ERROR|#[0-9]|freed by|allocated by'
    done
fi
finish
