#!/usr/bin/env bash
# Destinations outside the mesh follow [egress] policy: refused by default (SOCKS5 reply 2,
# HTTP 403), direct from this node (private ranges only when allow_private), or through an
# exit node (a peer with exit = true). Also: SOCKS5 username/password, and an idle mesh
# connection closed after idle_timeout.
source "$(dirname "$0")/lib.sh"
A=$T/a B=$T/b
for d in "$A" "$B"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
nid() { "$KM" id --dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'; }
IA=$(nid "$A") IB=$(nid "$B")
# "Outside" is 192.0.2.1 (TEST-NET-1) on this namespace's loopback: not a private range, and
# not one of the node's own names, so it is egress proper. 127.0.0.1 stands for private.
[ -n "${KM_IN_NETNS:-}" ] || { echo "egress: needs root for its network namespace"; exit 1; }
ip addr add 192.0.2.1/32 dev lo
mkdir -p "$T/www" && echo outside-world > "$T/www/index.html"
python3 -m http.server 19090 --bind 192.0.2.1 --directory "$T/www" >/dev/null 2>&1 &
PIDS+=($!)
python3 -m http.server 19091 --bind 127.0.0.1 --directory "$T/www" >/dev/null 2>&1 &
PIDS+=($!)
waitfor 5 curl -sf http://192.0.2.1:19090/index.html

conf_a() { # POLICY [extra line for [egress]]
    cat >"$A/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = 127.0.0.1:16101
idle_timeout = 1s
[socks5]
listen = 127.0.0.1:11180
username = alice
password = s3cret
[http]
listen = 127.0.0.1:18180
[egress]
policy = $1
$2
[peer exit]
node = $IB
address = 127.0.0.1:16102
EOF
}
conf_b() { # EXIT-FOR-A
    cat >"$B/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = 127.0.0.1:16102
[socks5]
enabled = false
[http]
enabled = false
[peer ay]
node = $IA
exit = $1
EOF
}
S5=socks5h://alice:s3cret@127.0.0.1:11180
URL=http://192.0.2.1:19090/index.html
PRIV=http://127.0.0.1:19091/index.html

# Default policy: refuse. SOCKS5 answers "not allowed by ruleset" (curl exit 97), HTTP 403.
conf_a refuse ""
conf_b true
check "node A starts" start_daemon "$A"
APID=$DPID
check "node B starts" start_daemon "$B"
BPID=$DPID
curl -s -m 5 -x "$S5" "$URL" -o /dev/null; rc=$?
check "refuse: SOCKS5 request fails (curl exit $rc)" test "$rc" -eq 97
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -x http://127.0.0.1:18180 "$URL")
check "refuse: HTTP proxy answers 403 (got $code)" test "$code" = 403

# SOCKS5 credentials are required and checked.
curl -s -m 5 -x socks5h://127.0.0.1:11180 "$URL" -o /dev/null; rc=$?
check "SOCKS5 without credentials refused (curl exit $rc)" test "$rc" -ne 0
curl -s -m 5 -x socks5h://alice:wrong@127.0.0.1:11180 "$URL" -o /dev/null; rc=$?
check "SOCKS5 with a wrong password refused (curl exit $rc)" test "$rc" -ne 0

# Direct: reaches outside addresses; loopback is a private range, refused unless allow_private.
DPID=$APID; stop_daemon
conf_a direct ""
check "A restarts with policy direct" start_daemon "$A"
APID=$DPID
check "direct reaches an outside address" test "$(curl -s -m 5 -x "$S5" "$URL")" = outside-world
check "... and through the HTTP proxy" \
    test "$(curl -s -m 5 -x http://127.0.0.1:18180 "$URL")" = outside-world
curl -s -m 5 -x "$S5" "$PRIV" -o /dev/null; rc=$?
check "direct: a private address is refused (curl exit $rc)" test "$rc" -eq 97
curl -s -m 5 -x "$S5" http://localhost:19091/ -o /dev/null; rc=$?
check "direct: a name resolving to a private address is refused (curl exit $rc)" test "$rc" -eq 97
DPID=$APID; stop_daemon
conf_a direct "allow_private = true"
check "A restarts with allow_private" start_daemon "$A"
APID=$DPID
check "allow_private reaches loopback" test "$(curl -s -m 5 -x "$S5" "$PRIV")" = outside-world

# Exit: the stream goes to B, which connects from its side (B allows private targets).
DPID=$APID; stop_daemon
conf_a exit "exit_node = exit"
check "A restarts with policy exit" start_daemon "$A"
APID=$DPID
check "exit: reached through node B" test "$(curl -s -m 5 -x "$S5" "$URL")" = outside-world
check "B carried it (A is connected to B)" sh -c "'$KM' status --dir '$B' --json | grep -q '\"sessions\": 1'"
curl -s -m 5 -x "$S5" "$PRIV" -o /dev/null; rc=$?
check "exit: B's own loopback is not reachable unless exposed (curl exit $rc)" test "$rc" -eq 97
"$KM" status --dir "$A" --json > "$T/st.json"
check "A has one session, to B" python3 -c '
import json,sys; s=json.load(open(sys.argv[1])); p=s["peers"][0]
assert s["sessions"] == 1 and p["name"] == "exit" and p["state"] == "connected", s' "$T/st.json"

# The idle connection is closed after idle_timeout (1 s).
check "idle connection closed" waitfor 5 sh -c "'$KM' peers --dir '$A' --json | grep -q '\"state\": \"idle\"'"
check "the close is logged" grep -q "idle for" "$A.log"

# B without exit = true for A refuses the same request.
DPID=$BPID; stop_daemon
conf_b false
check "B restarts without exit for A" start_daemon "$B"
BPID=$DPID
curl -s -m 5 -x "$S5" "$URL" -o /dev/null; rc=$?
check "exit refused by B (curl exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 28
check "B logged the refusal" waitfor 3 grep -q "refused direct-tcpip" "$B.log"
DPID=$BPID; stop_daemon
check "B exits 0" test "$DRC" -eq 0
DPID=$APID; stop_daemon
check "A exits 0" test "$DRC" -eq 0
for f in "$A.log" "$B.log"; do
    check "no sanitizer report in $(basename "$f")" sh -c "! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' '$f'"
done
finish
