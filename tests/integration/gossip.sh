#!/usr/bin/env bash
# Signed announcements travel over SSH: C dials B, B dials... A dials B; A never configured
# C's address, yet learns it from C's record that B passes on (verified by C's key), and
# reaches C by FQDN. Records are counted; A's own record is not taken back. A record C signs
# again after a change of paths reaches A down the sessions already open.
source "$(dirname "$0")/lib.sh"
A=$T/a B=$T/b C=$T/c
for d in "$A" "$B" "$C"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
nid() { "$KM" id --dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'; }
IA=$(nid "$A") IB=$(nid "$B") IC=$(nid "$C")
common='[dns]
enabled = false
[mdns]
enabled = false
[http]
enabled = false'
cat >"$A/keymesh.conf" <<EOF
$common
[mesh]
listen = 127.0.0.1:16601
[socks5]
listen = 127.0.0.1:11601
[peer bee]
node = $IB
address = 127.0.0.1:16602
[peer cee]
node = $IC
EOF
cat >"$B/keymesh.conf" <<EOF
$common
[mesh]
listen = 127.0.0.1:16602
expose = 18601
[socks5]
enabled = false
[peer ay]
node = $IA
[peer cee]
node = $IC
EOF
cat >"$C/keymesh.conf" <<EOF
$common
[mesh]
listen = 127.0.0.1:16603
listen = 0.0.0.0:16613
expose = 18603
[socks5]
listen = 127.0.0.1:11603
[peer bee]
node = $IB
address = 127.0.0.1:16602
[peer ay]
node = $IA
EOF
mkdir -p "$T/wb" "$T/wc" && echo from-b > "$T/wb/i" && echo from-c > "$T/wc/i"
python3 -m http.server 18601 --bind 127.0.0.1 --directory "$T/wb" >/dev/null 2>&1 &
PIDS+=($!)
python3 -m http.server 18603 --bind 127.0.0.1 --directory "$T/wc" >/dev/null 2>&1 &
PIDS+=($!)
check "web servers up" waitfor 10 sh -c "curl -sf http://127.0.0.1:18601/i && curl -sf http://127.0.0.1:18603/i"
for d in "$A" "$B" "$C"; do check "daemon $(basename "$d") starts" start_daemon "$d"; done
APID=$(pgrep -f "keymesh up --dir $A" | head -1)

# A cannot reach C yet: no address known.
curl -s -m 5 -x socks5h://127.0.0.1:11601 http://cee.mesh.internal:18603/i -o /dev/null; rc=$?
check "before gossip A has no path to C (curl exit $rc)" test "$rc" -ne 0
# C dials B: B offers its records over C's session and takes C's.
check "C reaches B" test "$(curl -s -m 5 -x socks5h://127.0.0.1:11603 http://bee.mesh.internal:18601/i)" = from-b
check "B took C's record" waitfor 5 sh -c "'$KM' status --dir '$B' --json | grep -q '\"gossip_accepted\": [1-9]'"
# A dials B: B passes C's record on.
check "A reaches B" test "$(curl -s -m 5 -x socks5h://127.0.0.1:11601 http://bee.mesh.internal:18601/i)" = from-b
check "A learned C's path by gossip" waitfor 5 sh -c \
    "'$KM' resolve --dir '$A' --json cee.mesh.internal | grep -q '\"source\": \"gossip\"'"
"$KM" resolve --dir "$A" cee.mesh.internal | sed 's/^/    /'
check "A reaches C by FQDN through the gossiped path" \
    test "$(curl -s -m 10 -x socks5h://127.0.0.1:11601 http://$IC.mesh.internal:18603/i)" = from-c
"$KM" status --dir "$A" --json > "$T/sa.json"
# (A record seen again through another peer counts as a replay and is dropped.)
check "A counts the records it took (B's and C's)" python3 -c '
import json,sys; d=json.load(open(sys.argv[1]))["dns"]
assert d["gossip_accepted"] >= 2, d' "$T/sa.json"
# C's path list changes (a new address under its wildcard listener) and C reloads: it signs a
# new record and offers it down the sessions it already has, so A learns the new address
# without a new session. Only inside the test's own network namespace (the address goes on a
# veth pair created in it; loopback addresses are never announced).
if [ -n "${KM_IN_NETNS:-}" ]; then
    ip link add kmg0 type veth peer name kmg1 && ip addr add 192.0.2.33/24 dev kmg0 &&
        ip link set kmg1 up && ip link set kmg0 up
    kill -HUP "$(pgrep -f "keymesh up --dir $C" | head -1)"
    check "C's new address reaches A over the open sessions" waitfor 5 sh -c \
        "'$KM' resolve --dir '$A' --json cee.mesh.internal | grep -q '192.0.2.33'"
else
    echo "# skipped: pushing a re-signed record (needs the test's own network namespace)"
fi
for d in "$C" "$B" "$A"; do
    DPID=$(pgrep -f "keymesh up --dir $d" | head -1); stop_daemon
    check "$(basename "$d") exits 0" test "$DRC" -eq 0
done
for f in "$A.log" "$B.log" "$C.log"; do
    check "no sanitizer report in $(basename "$f")" sh -c "! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' '$f'"
done
finish
