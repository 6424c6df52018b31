#!/usr/bin/env bash
# km_dnsupdate against a real knotd: a TSIG-signed RFC 2136 UPDATE publishes a node's AAAA, TXT
# and SVCB under the zone (checked with kdig); new paths replace the SVCB; removal leaves
# NXDOMAIN; UDP and TCP; a wrong TSIG secret is refused and reported as badsig.
source "$(dirname "$0")/lib.sh"
[ -n "${KM_IN_NETNS:-}" ] || { echo "dnsupdate: needs root for its network namespace"; exit 1; }
DRV=${KM_DNSUPDATE_DRIVER:?set by ctest}
command -v knotd >/dev/null || { echo "dnsupdate: knotd not installed"; exit 1; }
Z=m.example.test
PORT=5399
ID=25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena
VIP=fd6b:21fe:31df:a154:a261:626b:f854:46f
KEY=$(python3 -c 'import base64; print(base64.b64encode(bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")).decode())')
SECRET=$(head -c 32 /dev/urandom | base64)
WRONG=$(head -c 32 /dev/urandom | base64)
mkdir -p "$T/run" "$T/zones" "$T/db"
umask 077
cat >"$T/zones/$Z.zone" <<EOF
\$ORIGIN $Z.
\$TTL 60
@ SOA ns.$Z. hostmaster.$Z. 1 3600 600 86400 60
@ NS ns.$Z.
ns AAAA ::1
EOF
cat >"$T/knot.conf" <<EOF
server:
    rundir: "$T/run"
    listen: 127.0.0.1@$PORT
database:
    storage: "$T/db"
log:
  - target: stderr
    any: info
key:
  - id: keymesh-test
    algorithm: hmac-sha256
    secret: $SECRET
acl:
  - id: upd
    key: keymesh-test
    action: update
template:
  - id: default
    storage: "$T/zones"
zone:
  - domain: $Z
    file: "$T/zones/$Z.zone"
    acl: upd
EOF
knotd -c "$T/knot.conf" >"$T/knot.log" 2>&1 &
KPID=$!
PIDS+=("$KPID")
Q=(kdig +time=2 +retry=0 @127.0.0.1 -p $PORT)
check "knotd serves the zone" waitfor 10 sh -c "${Q[*]} +short $Z SOA | grep -q hostmaster"
N=$ID.$Z
pub() { "$DRV" publish 127.0.0.1:$PORT $Z keymesh-test "$@"; }

expect_exit 0 "publish over UDP" pub "$SECRET" $ID mapped=198.51.100.7:15022 lan=10.0.0.5:15022 relay=203.0.113.9:15022
check "... driver reports ok" contains "$T/out" '^ok$'
check "AAAA is the VIP" test "$("${Q[@]}" +short $N AAAA)" = "$VIP"
check "TXT carries the key" test "$("${Q[@]}" +short $N TXT)" = "\"v=keymesh1 k=$KEY\""
"${Q[@]}" +short $N SVCB > "$T/svcb1"
check "SVCB: one record (lan is not public, relay has no gateway)" test "$(wc -l < "$T/svcb1")" = 1
check "... rank 1 mapped with port, ipv4hint, kind" \
    grep -qE '^1 \. port=15022 ipv4hint=198\.51\.100\.7 key65280="?mapped"?' "$T/svcb1"

expect_exit 0 "new paths over TCP" pub "$SECRET" $ID tcp punched=192.0.2.44:4000 mapped=198.51.100.8:15023
"${Q[@]}" +short $N SVCB > "$T/svcb2"
check "SVCB replaced: two records" test "$(wc -l < "$T/svcb2")" = 2
check "... mapped ranks first" grep -qE '^1 \. port=15023 ipv4hint=198\.51\.100\.8 key65280="?mapped"?' "$T/svcb2"
check "... punched second" grep -qE '^2 \. port=4000 ipv4hint=192\.0\.2\.44 key65280="?punched"?' "$T/svcb2"
check "... the old path is gone" sh -c "! grep -q 198.51.100.7 '$T/svcb2'"

expect_exit 3 "wrong TSIG secret is refused" pub "$WRONG" $ID mapped=198.51.100.9:1
check "... reported as badsig" contains "$T/out" '^badsig$'
check "... records unchanged" grep -q 198.51.100.8 <("${Q[@]}" +short $N SVCB)

expect_exit 0 "removal" "$DRV" remove 127.0.0.1:$PORT $Z keymesh-test "$SECRET" $ID
"${Q[@]}" $N AAAA > "$T/nx"
check "... the name is NXDOMAIN" contains "$T/nx" "status: NXDOMAIN"
check "the zone apex is untouched" waitfor 2 sh -c "${Q[*]} +short $Z SOA | grep -q hostmaster"

expect_exit 3 "no server: timeout reported" "$DRV" publish 127.0.0.1:5398 $Z keymesh-test "$SECRET" $ID
check "... as timeout" contains "$T/out" '^timeout$'

kill -TERM "$KPID"; wait "$KPID" 2>/dev/null
finish
