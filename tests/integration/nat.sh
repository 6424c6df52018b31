#!/usr/bin/env bash
# Reaching nodes behind NAT (docs/NAT.md), in a topology of network namespaces built here:
#
#   "public" segment 192.0.2.0/24 (bridge in PUB; the node G at 192.0.2.1)
#     |- R1 wan 192.0.2.11 : nftables masquerade + a real miniupnpd (nftables flavour)
#     |     LAN 198.51.100.0/24 : node A 198.51.100.2
#     '- R2 wan 192.0.2.12 : nftables masquerade, no port mapping
#           LAN 203.0.113.0/24 : node B 203.0.113.2
#
# Shown: with [nat] portmap off, B cannot reach A (nothing forwards to it); with it on, A
# gets a UPnP mapping from miniupnpd and announces it as a `mapped` path, its signed record
# reaches B through G, and B connects to A directly at the mapped address (the host key is
# checked against A's node ID as on every path); the same with NAT-PMP; a clean shutdown
# deletes the mapping at the router; a router that answers UPnP and NAT-PMP with garbage
# does not hurt B, which logs the failure once and stays up. Then the relay, mapping off: G
# refuses registrations of keys it does not allow; A and B register with G and learn their
# reflexive addresses; B reaches A through G with A's host key checked end to end; 1 GiB
# with matching sha256; G stopping mid-transfer fails the stream cleanly; a gateway that
# swaps in its own key is refused; after G restarts new relayed streams work within seconds.
#
# Only documentation-range addresses are configured on interfaces. miniupnpd 2.3.1 refuses
# to map when its WAN address is reserved (every RFC 5737 range is), and insists on being
# told a public one with ext_ip; it reports that text in its answers (11.0.0.10, never
# configured anywhere or routed), so A is told its real public address with
# [nat] external_address and announces it with the port the router mapped.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "nat: needs root for network namespaces"; exit 1; }
command -v miniupnpd >/dev/null && command -v nft >/dev/null ||
    { echo "nat: needs miniupnpd (miniupnpd-nftables) and nft (scripts/deps.sh)"; exit 1; }
source "$(dirname "$0")/nat_topo.sh"
# The impersonating gateway: keymesh rebuilt with the test-only swap (tests/integration/CMakeLists.txt).
SWAPGW=${KM_SWAPGW:-$(dirname "$KM")/../../tests/integration/keymesh-swapgw}
[ -x "$SWAPGW" ] || { echo "nat: no keymesh-swapgw at $SWAPGW (build the tests)"; exit 1; }
trap 'nat_topo_down; cleanup' EXIT
# Routers that answer unsolicited SYNs with resets: B's dial of an unmapped A fails at once.
nat_topo_up km-nat-$$ open || exit 1
check "A reaches the public segment through R1" ip netns exec "$NA" ping -c1 -W2 192.0.2.1 >/dev/null
check "B reaches the public segment through R2" ip netns exec "$NB" ping -c1 -W2 192.0.2.1 >/dev/null

# miniupnpd on R1, in the foreground (-d), only for A's LAN.
cat >"$T/miniupnpd.conf" <<EOF
ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
ext_ip=11.0.0.10
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07c
system_uptime=yes
notify_interval=60
clean_ruleset_interval=600
allow 1024-65535 198.51.100.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
ip netns exec "$R1" miniupnpd -d -f "$T/miniupnpd.conf" -P "$T/miniupnpd.pid" >"$T/miniupnpd.log" 2>&1 &
PIDS+=($!)
check "miniupnpd listens for NAT-PMP on R1" waitfor 10 sh -c "ip netns exec $R1 ss -lun | grep -q ':5351'"

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
expose = 8000
[socks5]
enabled = false
[nat]
portmap = off
[peer a]
node = $IA
[peer b]
node = $IB
EOF
# conf_a PORTMAP: A's configuration with [nat] portmap = PORTMAP.
conf_a() {
    cat >"$A/keymesh.conf" <<EOF
$common
[mesh]
listen = 0.0.0.0:15022
expose = 8000
[socks5]
listen = 127.0.0.1:1080
[nat]
portmap = $1
external_address = 192.0.2.11
[peer g]
node = $IG
address = 192.0.2.1:15022
[peer b]
node = $IB
EOF
}
cat >"$B/keymesh.conf" <<EOF
$common
[mesh]
listen = 0.0.0.0:15022
[socks5]
listen = 127.0.0.1:1080
[nat]
portmap = off
[peer g]
node = $IG
address = 192.0.2.1:15022
[peer a]
node = $IA
EOF
mkdir -p "$T/wa" "$T/wg" && echo from-a >"$T/wa/i" && echo from-g >"$T/wg/i"
ip netns exec "$NA" python3 -m http.server 8000 --bind 127.0.0.1 --directory "$T/wa" >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$PUB" python3 -m http.server 8000 --bind 127.0.0.1 --directory "$T/wg" >/dev/null 2>&1 &
PIDS+=($!)

# up NS DIR: start a daemon in a namespace; sets UPPID.
up() {
    ip netns exec "$1" "$KM" up --dir "$2" >>"$2.log" 2>&1 &
    UPPID=$!
    PIDS+=("$UPPID")
    waitfor 10 ip netns exec "$1" "$KM" status --dir "$2"
}
# down PID: SIGTERM, wait up to 10 s; returns the exit status.
down() {
    local n=200
    kill -TERM "$1" 2>/dev/null
    while [ "$n" -gt 0 ] && kill -0 "$1" 2>/dev/null; do sleep 0.05; n=$((n - 1)); done
    kill -KILL "$1" 2>/dev/null
    wait "$1"
}
st() { ip netns exec "$1" "$KM" status --dir "$2" --json; }
jq_() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# pm NS DIR FIELD: a member of the node's status "nat"."portmap" object.
pm() { st "$1" "$2" | jq_ "d['nat']['portmap']['$3']"; }
# pm_is NS DIR FIELD VALUE
pm_is() { test "$(pm "$1" "$2" "$3")" = "$4"; }
# sees_path NS DIR NODE ADDR: the node's table has ADDR among NODE's paths.
sees_path() { ip netns exec "$1" "$KM" resolve --dir "$2" --json "$3.mesh.internal" | grep -q "\"address\": \"$4\""; }
# conn_at NS DIR ADDR: the node's peers list shows a connection at ADDR.
conn_at() { ip netns exec "$1" "$KM" peers --dir "$2" --json | grep -q "\"$3\""; }
reach_a() { test "$(get "$NB" "$B" "$IA")" = from-a; }
# get NS DIR URL-NODE: curl through the node's SOCKS5 proxy to NODE's port 8000.
get() { ip netns exec "$1" curl -s -m 8 --socks5-hostname 127.0.0.1:1080 "http://$3.mesh.internal:8000/i"; }
# touch_g NS DIR: a stream to G, so the node dials G and they swap signed records.
touch_g() { test "$(get "$1" "$2" "$IG")" = from-g; }
mapped_rules() { ip netns exec "$R1" nft list chain inet filter prerouting_miniupnpd | grep -c 'dnat'; }

check "G starts" up "$PUB" "$G"; PG=$UPPID

# 1. Without port mapping, nothing on R1 forwards to A: B cannot reach it.
conf_a off
check "A starts with portmap off" up "$NA" "$A"; PA=$UPPID
check "status reports portmap off" pm_is "$NA" "$A" mode off
check "A reaches G (and hands G its record)" waitfor 10 touch_g "$NA" "$A"
check "B starts" up "$NB" "$B"; PB=$UPPID
check "B reaches G (and takes A's record from it)" waitfor 10 touch_g "$NB" "$B"
check "B cannot reach A without a mapping" test -z "$(get "$NB" "$B" "$IA")"
down "$PA"; down "$PB"

# 2. UPnP-IGD: A maps its mesh port at miniupnpd and announces the mapped path.
conf_a upnp
: >"$A.log"
check "A starts with portmap = upnp" up "$NA" "$A"; PA=$UPPID
check "A holds a UPnP mapping" waitfor 15 pm_is "$NA" "$A" method upnp
st "$NA" "$A" | jq_ 'd["nat"]' | sed 's/^/    /'
EXT=$(pm "$NA" "$A" external)
ANN=$(pm "$NA" "$A" announced)
check "the router reported its ext_ip and the mapped port ($EXT)" test "${EXT%:*}" = 11.0.0.10
check "A announces 192.0.2.11 with the mapped port ($ANN)" test "$ANN" = "192.0.2.11:${EXT##*:}"
check "miniupnpd installed a DNAT rule" test "$(mapped_rules)" -ge 1
check "A's mapping is logged once" test "$(grep -c 'portmap: upnp maps' "$A.log")" = 1
check "A reaches G with the new record" waitfor 10 touch_g "$NA" "$A"
check "B starts" up "$NB" "$B"; PB=$UPPID
check "B reaches G and learns A's record" waitfor 10 touch_g "$NB" "$B"
check "B sees A's mapped path" waitfor 5 sees_path "$NB" "$B" "$IA" "$ANN"
ip netns exec "$NB" "$KM" resolve --dir "$B" "$IA.mesh.internal" | sed 's/^/    /'
check "B reaches A's web server through the mapping" reach_a
check "B's connection to A is at the mapped address" conn_at "$NB" "$B" "$ANN"
ping_path() { ip netns exec "$1" "$KM" ping --dir "$2" -n 3 --json "$3" | jq_ "d['path'] + ' ' + d['address'] + ' ' + str(len(d['rtt_ms']))"; }
check "keymesh ping A from B answers on the direct path at $ANN, 3 rounds" test "$(ping_path "$NB" "$B" "$IA")" = "direct $ANN 3"
ip netns exec "$NB" "$KM" ping --dir "$B" -n 2 "$IA" | sed 's/^/    /'
check "A stops cleanly" down "$PA"
check "the clean shutdown deleted the mapping at the router" test "$(mapped_rules)" = 0
down "$PB"

# 3. NAT-PMP: the same through the other protocol.
conf_a natpmp
: >"$A.log"
check "A starts with portmap = natpmp" up "$NA" "$A"; PA=$UPPID
check "A holds a NAT-PMP mapping" waitfor 15 pm_is "$NA" "$A" method natpmp
ANN=$(pm "$NA" "$A" announced)
check "A announces the NAT-PMP mapping ($ANN)" test "${ANN%:*}" = 192.0.2.11
check "miniupnpd installed a DNAT rule for it" test "$(mapped_rules)" -ge 1
check "A reaches G with the new record" waitfor 10 touch_g "$NA" "$A"
check "B starts" up "$NB" "$B"; PB=$UPPID
check "B reaches G and learns A's record" waitfor 10 touch_g "$NB" "$B"
check "B reaches A through the NAT-PMP mapping" waitfor 10 reach_a
check "B's connection to A is at the mapped address" conn_at "$NB" "$B" "$ANN"
check "A stops cleanly" down "$PA"
check "the clean shutdown deleted the NAT-PMP mapping" test "$(mapped_rules)" = 0
down "$PB"

# 4. A router answering UPnP and NAT-PMP with garbage: B keeps running, maps nothing,
# announces nothing, and logs the failure once however often it retries (every second here).
ip netns exec "$R2" python3 "$(dirname "$0")/nat_garbage.py" 203.0.113.1 >"$T/garbage.log" 2>&1 &
PIDS+=($!)
check "the garbage router listens" waitfor 10 sh -c "ip netns exec $R2 ss -lun | grep -q ':5351'"
sed -i 's/^portmap = off$/portmap = on\nportmap_retry = 1s/' "$B/keymesh.conf"
: >"$B.log"
check "B starts with portmap on behind the garbage router" up "$NB" "$B"; PB=$UPPID
check "B retries several times" waitfor 30 sh -c "[ \$(ip netns exec $NB '$KM' status --dir '$B' --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"nat\"][\"portmap\"][\"attempts\"])') -ge 4 ]"
st "$NB" "$B" | jq_ 'd["nat"]' | sed 's/^/    /'
check "B holds no mapping" pm_is "$NB" "$B" mapped False
check "B announces no mapped path" pm_is "$NB" "$B" announced None
check "B reports why" sh -c "test -n \"\$(ip netns exec $NB '$KM' status --dir '$B' --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"nat\"][\"portmap\"][\"error\"] or \"\")')\""
check "B logged the failure once" test "$(grep -c 'portmap: ' "$B.log")" = 1
grep 'portmap: ' "$B.log" | sed 's/^/    /'
check "B still works: it reaches G" waitfor 10 touch_g "$NB" "$B"
check "B stops cleanly" down "$PB"

check "G stops cleanly" down "$PG"

# 5. Relay through G, port mapping off everywhere. G accepts registrations only from peers
# with relay = true: B is refused until a reload allows it.
conf_g() {
    cat >"$G/keymesh.conf" <<EOF
$common
[mesh]
listen = 192.0.2.1:15022
expose = 8000
[socks5]
enabled = false
[nat]
portmap = off
[gateway]
enabled = on
max_streams = 16
max_bytes = ${2:-0}
[peer a]
node = $IA
relay = true
[peer b]
node = $IB
relay = $1
EOF
}
conf_g false
conf_a off
for d in "$A" "$B"; do
    sed -i -e 's/^portmap = .*$/portmap = off/' -e '/^portmap_retry/d' "$d/keymesh.conf"
    # Hole punching off: these checks are about the relay (tests/integration/punch.sh
    # covers punching; these routers reset unsolicited SYNs, but a punch still gets through
    # now and then, and would take the streams off the relay).
    sed -i 's/^\[nat\]$/[nat]\ngateway = g\npunch = off/' "$d/keymesh.conf"
done
regs() { st "$1" "$2" | jq_ "d['nat']['registered']"; }
gwf() { st "$PUB" "$G" | jq_ "d['nat']['gateway']['$1']"; }
relay_seen() { ip netns exec "$1" "$KM" resolve --dir "$2" --json "$3.mesh.internal" | grep -q '"kind": "relay"'; }
peer_path() { ip netns exec "$1" "$KM" peers --dir "$2" --json | python3 -c "import json,sys; print([p.get('path','') for p in json.load(sys.stdin) if p['node_id']=='$3'][0])"; }
reg_is() { test "$(regs "$1" "$2")" = "$3"; }
gw_ge() { test "$(gwf "$1")" -ge "$2"; }
both_registered() { test "$(regs "$NA" "$A")" = 1 && test "$(regs "$NB" "$B")" = 1; }
: >"$G.log"; : >"$A.log"; : >"$B.log"
check "G starts as a gateway" up "$PUB" "$G"; PG=$UPPID
check "B starts (portmap off, gateway g)" up "$NB" "$B"; PB=$UPPID
check "G refuses B's registration (relay = false)" waitfor 10 gw_ge refused 1
check "B is not registered" reg_is "$NB" "$B" 0
conf_g true
kill -HUP "$PG"
check "after G's reload B registers" waitfor 15 reg_is "$NB" "$B" 1
# A comes after B: G hands A's record on to B at once (a gateway forwards new records to its
# connected peers), B does not wait for a new session.
check "A starts (portmap off, gateway g)" up "$NA" "$A"; PA=$UPPID
check "A registers with G" waitfor 10 reg_is "$NA" "$A" 1
REFL=$(st "$NA" "$A" | jq_ "d['nat']['reflexive']")
check "G tells A the address it sees: R1's masquerade ($REFL)" test "${REFL%:*}" = 192.0.2.11
check "G holds A's record with its relay path" waitfor 10 relay_seen "$PUB" "$G" "$IA"
check "B learns A's relay path from G, forwarded" waitfor 10 relay_seen "$NB" "$B" "$IA"
check "B reaches A through the relay" waitfor 10 reach_a
check "B's connection to A is relayed" test "$(peer_path "$NB" "$B" "$IA")" = relay
check "G relayed it" gw_ge relayed_total 1
check "keymesh ping A from B answers on the relay path" sh -c "ip netns exec $NB '$KM' ping --dir '$B' -n 3 --json $IA | grep -q '\"path\": \"relay\"'"
ip netns exec "$NB" "$KM" ping --dir "$B" -n 3 "$IA" | sed 's/^/    /'
check "keymesh ping of an unknown node fails with exit 1" sh -c "ip netns exec $NB '$KM' ping --dir '$B' aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.mesh.internal; test \$? = 1"
ip netns exec "$NB" "$KM" peers --dir "$B" | sed 's/^/    /'

# A big transfer through the relay, checked end to end.
MB=${KM_BIG_MB:-1024}
head -c "$((MB << 20))" /dev/urandom >"$T/wa/big"
WANT=$(sha256sum <"$T/wa/big" | cut -d' ' -f1)
t0=$(date +%s%N)
GOT=$(ip netns exec "$NB" curl -s -m 240 --socks5-hostname 127.0.0.1:1080 "http://$IA.mesh.internal:8000/big" | sha256sum | cut -d' ' -f1)
t1=$(date +%s%N)
check "$MB MiB through the relay, sha256 matches ($(( MB * 8389 / ((t1 - t0) / 1000000 + 1) )) Mbit/s)" test "$GOT" = "$WANT"
rm -f "$T/wa/big"

# The gateway restarts mid-session: the relayed stream fails cleanly, new ones work soon.
head -c $((64 << 20)) /dev/urandom >"$T/wa/slow"
ip netns exec "$NB" curl -s -m 60 --limit-rate 1M --socks5-hostname 127.0.0.1:1080 -o /dev/null "http://$IA.mesh.internal:8000/slow" &
CURL=$!
sleep 1
check "G stops cleanly mid-transfer" down "$PG"
t0=$(date +%s)
wait "$CURL"; CRC=$?
t1=$(date +%s)
check "the relayed transfer failed cleanly within 10 s (curl exit $CRC)" test "$CRC" -ne 0 -a $((t1 - t0)) -le 10
check "B's daemon is still up" sh -c "ip netns exec $NB '$KM' status --dir '$B' >/dev/null"

# A gateway that impersonates the target (its own key instead of A's) fails the host-key
# check: B refuses the session, nothing reaches A.
ip netns exec "$PUB" "$SWAPGW" up --dir "$G" >>"$G.log" 2>&1 &
PG=$!; PIDS+=("$PG")
check "an impersonating G starts" waitfor 10 ip netns exec "$PUB" "$KM" status --dir "$G"
check "B re-registers with it" waitfor 15 reg_is "$NB" "$B" 1
check "B's stream to A through the impersonating G fails" test -z "$(get "$NB" "$B" "$IA")"
check "... on the host-key check" waitfor 5 grep -q "host key" "$B.log"
grep -m1 "host key" "$B.log" | sed 's/^/    /'
down "$PG"

# G back, honest: registrations come back by themselves and new streams work within seconds.
t0=$(date +%s%N)
check "G restarts" up "$PUB" "$G"; PG=$UPPID
check "both nodes re-register" waitfor 15 both_registered
check "a new relayed stream works" waitfor 15 reach_a
t1=$(date +%s%N)
echo "    relay usable again $(( (t1 - t0) / 1000000 )) ms after G's restart"

# Per-node byte bound: with max_bytes = 1M, once a relayed session that carried more has
# ended (bytes are counted as streams end), G refuses new relays to that node.
conf_g true 1M
kill -HUP "$PG"
head -c $((4 << 20)) /dev/urandom >"$T/wa/four"
check "4 MiB through the relay" test "$(ip netns exec "$NB" curl -s -m 30 --socks5-hostname 127.0.0.1:1080 "http://$IA.mesh.internal:8000/four" | wc -c)" = $((4 << 20))
check "B restarts (its relayed session to A ends)" down "$PB"
check "B is back" up "$NB" "$B"; PB=$UPPID
check "B re-registers" waitfor 15 reg_is "$NB" "$B" 1
check "G refuses a new relay to A past max_bytes" test -z "$(get "$NB" "$B" "$IA")"
check "... and says why" waitfor 5 grep -q "per-node limit" "$G.log"
conf_g true 0
kill -HUP "$PG"
check "with the bound lifted the relay works again" waitfor 15 reach_a

# Upgrade: A turns port mapping on (reload); its new record reaches B over their relayed
# session, and B's background upgrade moves the connection to the direct mapped path.
check "B's connection to A is relayed before" test "$(peer_path "$NB" "$B" "$IA")" = relay
sed -i 's/^portmap = off$/portmap = upnp/' "$A/keymesh.conf"
kill -HUP "$PA"
check "A maps its port after the reload" waitfor 15 pm_is "$NA" "$A" method upnp
check "B moves to a direct connection to A" waitfor 40 sh -c "test \"\$(ip netns exec $NB '$KM' peers --dir '$B' --json | python3 -c \"import json,sys; print([p.get('path','') for p in json.load(sys.stdin) if p['node_id']=='$IA'][0])\")\" = direct"
check "B's ping of A now answers on the direct path at the mapping" test "$(ping_path "$NB" "$B" "$IA" | cut -d' ' -f1-2)" = "direct 192.0.2.11:15022"
grep -m1 'moved from the relay' "$B.log" | sed 's/^/    /'
check "streams still work after the move" reach_a
check "A stops cleanly" down "$PA"
check "B stops cleanly" down "$PB"
check "G stops cleanly" down "$PG"
if [ "$FAIL" -gt 0 ]; then
    for f in "$G.log" "$A.log" "$B.log"; do echo "--- $f"; tail -40 "$f"; done
fi
finish
