#!/usr/bin/env bash
# The DNS server against real clients: dig/kdig for AAAA, TXT, SVCB (every SvcParam), PTR,
# NXDOMAIN, REFUSED and TCP; the same SVCB query from two sources ranked differently; a real
# unbound resolving the mesh suffix through a stub-zone; `keymesh resolve`.
source "$(dirname "$0")/lib.sh"
[ -n "${KM_IN_NETNS:-}" ] || { echo "dns: needs root for its network namespace"; exit 1; }
A=$T/a
"$KM" init --dir "$A" >/dev/null || exit 1
# Peer B is known by configuration only: a private and a public address (documentation ranges).
B_ID=25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena
B_VIP=fd6b:21fe:31df:a154:a261:626b:f854:46f
B_KEY=$(python3 -c 'import base64; print(base64.b64encode(bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")).decode())')
cat >"$A/keymesh.conf" <<EOF
[mesh]
listen = 127.0.0.1:16401
[socks5]
enabled = false
[http]
enabled = false
[dns]
listen = 127.0.0.1:5354
[peer bee]
node = $B_ID
address = 10.9.0.5:15022
address = 198.51.100.7:15022
EOF
# A source address that shares no link with the node: TEST-NET-1 on loopback.
ip addr add 192.0.2.77/32 dev lo
check "daemon with DNS starts" start_daemon "$A"
D=(dig +norec +time=2 +tries=1 @127.0.0.1 -p 5354)
S=mesh.internal

check "AAAA of a node ID is its VIP" test "$("${D[@]}" +short $B_ID.$S AAAA)" = "$B_VIP"
check "AAAA by alias" test "$("${D[@]}" +short bee.$S AAAA)" = "$B_VIP"
check "AAAA of any valid node ID, known or not (self-certifying)" \
    test "$("${D[@]}" +short hvabpq7iioevvevxbktu2g36xsojqlgpf3cjndgazvk7ckxumyga.$S AAAA)" = "fd6b:39f7:13d0:a644:253f:452:9421:b9f5"
check "TXT carries the key" test "$("${D[@]}" +short $B_ID.$S TXT)" = "\"v=keymesh1 k=$B_KEY\""
check "PTR of the VIP names the node" \
    test "$("${D[@]}" +short -x $B_VIP)" = "$B_ID.$S."
"${D[@]}" nobody.$S AAAA > "$T/nx"
check "unknown name: NXDOMAIN" contains "$T/nx" "status: NXDOMAIN"
check "... with the SOA in authority" grep -qE "^$S\.[[:space:]].*SOA" "$T/nx"
"${D[@]}" $B_ID.$S MX > "$T/nodata"
check "existing name, other type: NODATA" contains "$T/nodata" "status: NOERROR, id"
check "... no answer records" contains "$T/nodata" "ANSWER: 0"
"${D[@]}" example.com A > "$T/refused"
check "outside the zones: REFUSED" contains "$T/refused" "status: REFUSED"
check "TCP answers too" test "$("${D[@]}" +tcp +short $B_ID.$S AAAA)" = "$B_VIP"
check "kdig agrees" test "$(kdig +short @127.0.0.1 -p 5354 $B_ID.$S AAAA)" = "$B_VIP"

# SVCB ranked per requester: this machine (same link) gets the LAN address first; a source
# that shares no link gets only the public one.
"${D[@]}" +short $B_ID.$S TYPE64 > "$T/svcb.local"
"${D[@]}" -b 192.0.2.77 +short $B_ID.$S TYPE64 > "$T/svcb.other"
check "SVCB for this machine: two paths" test "$(wc -l < "$T/svcb.local")" = 2
check "... rank 1 is the LAN address (port, ipv4hint, kind)" \
    grep -qE '^1 \. port=15022 ipv4hint=10\.9\.0\.5 key65280="?lan"?' "$T/svcb.local"
check "... rank 2 is the mapped one" \
    grep -qE '^2 \. port=15022 ipv4hint=198\.51\.100\.7 key65280="?mapped"?' "$T/svcb.local"
check "SVCB for an outside requester: the public path only, rank 1" \
    test "$(cat "$T/svcb.other" | wc -l)" = 1 -a -n "$(grep -E '^1 \. port=15022 ipv4hint=198\.51\.100\.7' "$T/svcb.other")"
cat "$T/svcb.local" "$T/svcb.other" | sed 's/^/    /'

# keymesh resolve shows the same ranking.
"$KM" resolve --dir "$A" --json bee.$S > "$T/res.json"
check "keymesh resolve ranks like DNS" python3 -c '
import json,sys; j=json.load(open(sys.argv[1])); p=j["paths"]
assert j["node_id"]==sys.argv[2] and j["name"]=="bee"
assert [(x["rank"],x["kind"],x["address"]) for x in p]==[(1,"lan","10.9.0.5:15022"),(2,"mapped","198.51.100.7:15022")], p' "$T/res.json" $B_ID
expect_exit 1 "resolve of an unknown name fails" "$KM" resolve --dir "$A" nobody.$S
check "... saying so" contains "$T/err" "no such node or name"

# A real resolver: unbound with a stub-zone for the suffix (and the reverse zone).
if command -v unbound >/dev/null; then
    cat >"$T/unbound.conf" <<EOF
server:
    interface: 127.0.0.1
    port: 5399
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$T"
    pidfile: "$T/unbound.pid"
    use-syslog: no
    logfile: "$T/unbound.log"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    domain-insecure: "$S"
    domain-insecure: "b.6.d.f.ip6.arpa"
    local-zone: "b.6.d.f.ip6.arpa." transparent
    module-config: "iterator"
stub-zone:
    name: "$S"
    stub-addr: 127.0.0.1@5354
stub-zone:
    name: "b.6.d.f.ip6.arpa"
    stub-addr: 127.0.0.1@5354
EOF
    unbound -d -c "$T/unbound.conf" >"$T/unbound.out" 2>&1 &
    PIDS+=($!)
    check "unbound starts" waitfor 10 dig +time=1 +tries=1 @127.0.0.1 -p 5399 . SOA
    check "unbound resolves a node through the stub-zone" \
        test "$(dig +short @127.0.0.1 -p 5399 $B_ID.$S AAAA)" = "$B_VIP"
    check "... and an alias" test "$(dig +short @127.0.0.1 -p 5399 bee.$S AAAA)" = "$B_VIP"
    check "... and the reverse name" test "$(dig +short @127.0.0.1 -p 5399 -x $B_VIP)" = "$B_ID.$S."
else
    bad "unbound is not installed (scripts/deps.sh installs it)"
fi

# The UDP packet cache: the same query (no cookie, so the bytes repeat; dig picks a new ID)
# twice within a second is answered from the cache, with the right answer and ID.
hits() { "$KM" status --dir "$A" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["dns"]["cache_hits"])'; }
H0=$(hits)
"${D[@]}" +nocookie +short "$B_ID.$S" AAAA >/dev/null
check "a repeated query is answered from the cache, correctly" \
    test "$("${D[@]}" +nocookie +short "$B_ID.$S" AAAA)" = "$B_VIP"
check "... and counted (cache_hits $H0 -> $(hits))" test "$(hits)" -gt "$H0"
"$KM" status --dir "$A" --json > "$T/st.json"
check "status counts DNS queries" python3 -c '
import json,sys; s=json.load(open(sys.argv[1])); assert s["dns"]["queries"] >= 10, s["dns"]' "$T/st.json"
stop_daemon
check "exit 0" test "$DRC" -eq 0
check "no sanitizer report" sh -c "! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' '$A.log'"
finish
