#!/usr/bin/env bash
# Zero-config LAN discovery with the real daemon: two nodes in two network namespaces on one
# veth link, no [peer] configured, find each other by mDNS; then curl --socks5-hostname from A
# reaches an HTTP server on B by B's FQDN (the dialer uses the mDNS path and checks B's host key
# against the name); `keymesh resolve` shows the learned path; avahi-browse (when a private avahi
# can run) is covered by mdns.sh. A TUN device on A reaches B by VIP. A new address on B reaches A in a re-signed record. Everything is created here and deleted on every exit.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "lan: needs root for network namespaces"; exit 1; }
veth_pair ln || exit 1
A=$T/a B=$T/b
for d in "$A" "$B"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
IDA=$("$KM" id --dir "$A" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
IDB=$("$KM" id --dir "$B" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
cat >"$A/keymesh.conf" <<EOF
[mesh]
listen = [::]:15022
[tun]
enabled = true
name = kmlanA
[socks5]
listen = 127.0.0.1:1080
[http]
enabled = false
[dns]
enabled = false
EOF
cat >"$B/keymesh.conf" <<EOF
[mesh]
listen = 0.0.0.0:15022
expose = 8000
allow_unknown = true
[socks5]
enabled = false
[http]
enabled = false
[dns]
enabled = false
EOF
mkdir -p "$T/www" && echo hello-lan > "$T/www/index.html"
ip netns exec "$NB" python3 -m http.server 8000 --bind 127.0.0.1 --directory "$T/www" >/dev/null 2>&1 &
PIDS+=($!)
check "B's web server is up" waitfor 10 ip netns exec "$NB" curl -sf http://127.0.0.1:8000/index.html
ip netns exec "$NB" "$KM" up --dir "$B" >"$B.log" 2>&1 &
PB=$!; PIDS+=("$PB")
ip netns exec "$NA" "$KM" up --dir "$A" >"$A.log" 2>&1 &
PA=$!; PIDS+=("$PA")
check "both daemons answer" waitfor 10 sh -c "ip netns exec $NA '$KM' status --dir '$A' && ip netns exec $NB '$KM' status --dir '$B'"
check "mDNS sockets are open on A" sh -c "ip netns exec $NA '$KM' status --dir '$A' --json | grep -q '\"mdns_sockets\": [1-9]'"
check "A learns B's path by mDNS (no peer configured)" waitfor 10 sh -c \
    "ip netns exec $NA '$KM' resolve --dir '$A' --json $IDB.mesh.internal | grep -q '\"source\": \"mdns\"'"
ip netns exec "$NA" "$KM" resolve --dir "$A" "$IDB.mesh.internal" | sed 's/^/    /'
check "curl --socks5-hostname reaches B by FQDN over the LAN path" \
    test "$(ip netns exec $NA curl -s -m 10 --socks5-hostname 127.0.0.1:1080 http://$IDB.mesh.internal:8000/index.html)" = hello-lan
check "A's connection is to B's LAN address" sh -c \
    "ip netns exec $NA '$KM' peers --dir '$A' --json | grep -q '192.0.2.2:15022'"
# A forged signed record (a made-up node whose signature does not verify) is dropped and
# counted; the real peers' records were taken.
FORGED=$(ip netns exec "$NB" python3 "$(dirname "$0")/mdns_forge.py" 192.0.2.2)
check "the forged record is rejected and counted" waitfor 5 sh -c \
    "ip netns exec $NA '$KM' status --dir '$A' --json | python3 -c 'import json,sys; d=json.load(sys.stdin)[\"dns\"]; sys.exit(0 if d[\"announcements_rejected\"] >= 1 else 1)'"
check "... and the real one was taken" sh -c \
    "ip netns exec $NA '$KM' status --dir '$A' --json | python3 -c 'import json,sys; d=json.load(sys.stdin)[\"dns\"]; sys.exit(0 if d[\"announcements_accepted\"] >= 1 else 1)'"
# B listens on the IPv4 wildcard, so its signed path list is every IPv4 address it has. A new
# address and a reload make B sign a new record, which mDNS announces again and A takes.
accepted() {
    ip netns exec "$NA" "$KM" status --dir "$A" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["dns"]["announcements_accepted"])'
}
# The TUN device reaches B by its VIP with nothing configured: the VIP maps to B's key through
# the keys discovery learned. A's own VIP is never announced as a path.
VIPB=$("$KM" id --dir "$B" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vip"])')
check "curl http://[VIP]:8000/ reaches B over A's TUN (B found by mDNS only)" \
    test "$(ip netns exec $NA curl -s -m 10 http://[$VIPB]:8000/index.html)" = hello-lan
check "ping -6 B's VIP answers" ip netns exec "$NA" ping -6 -c 2 -i 0.2 -W 3 "$VIPB"
check "B learns A's paths (A listens on the IPv6 wildcard)" waitfor 10 sh -c \
    "ip netns exec $NB '$KM' resolve --dir '$B' --json $IDA.mesh.internal | grep -q '192.0.2.1'"
check "... and A's VIP (its TUN address) is not among them" sh -c \
    "! ip netns exec $NB '$KM' resolve --dir '$B' --json $IDA.mesh.internal | grep -q '\"\\[fd6b'"
ACC0=$(accepted)
ip -n "$NB" addr add 198.51.100.2/24 dev "$IB"
kill -HUP "$PB"
check "after B's reload A knows B's new address" waitfor 10 sh -c \
    "ip netns exec $NA '$KM' resolve --dir '$A' --json $IDB.mesh.internal | grep -q '198.51.100.2'"
check "... from a newly signed record (accepted $ACC0 -> $(accepted))" test "$(accepted)" -gt "$ACC0"
kill -TERM "$PA" "$PB"
wait "$PA"; RA=$?
wait "$PB"; RB=$?
check "A exits 0 (got $RA)" test "$RA" = 0
check "B exits 0 (got $RB)" test "$RB" = 0
for f in "$A.log" "$B.log"; do
    check "no sanitizer report in $(basename "$f")" sh -c "! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' '$f'"
done
finish
