#!/usr/bin/env bash
# The daemon publishes its own records by RFC 2136 UPDATE ([publish]) to a real knotd with
# TSIG, so that resolvers find it under a delegated zone; a clean shutdown removes them; a
# TSIG secret file readable by others is refused at start.
source "$(dirname "$0")/lib.sh"
[ -n "${KM_IN_NETNS:-}" ] || { echo "publish: needs root for its network namespace"; exit 1; }
command -v knotd >/dev/null || { echo "publish: knotd not installed"; exit 1; }
Z=m.example.test
PORT=5399
A=$T/a
"$KM" init --dir "$A" >/dev/null || exit 1
ID=$("$KM" id --dir "$A" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
VIP=$("$KM" id --dir "$A" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vip"])')
SECRET=$(head -c 32 /dev/urandom | base64)
mkdir -p "$T/run" "$T/zones" "$T/db"
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
key:
  - id: keymesh-test
    algorithm: hmac-sha256
    secret: $SECRET
acl:
  - id: upd
    key: keymesh-test
    action: update
zone:
  - domain: $Z
    file: "$T/zones/$Z.zone"
    acl: upd
EOF
knotd -c "$T/knot.conf" >"$T/knot.log" 2>&1 &
PIDS+=($!)
Q=(kdig +time=2 +retry=0 @127.0.0.1 -p $PORT)
check "knotd serves the zone" waitfor 10 sh -c "${Q[*]} +short $Z SOA | grep -q hostmaster"
printf '%s\n' "$SECRET" > "$A/tsig.secret"
chmod 600 "$A/tsig.secret"
cat >"$A/keymesh.conf" <<EOF
[node]
suffix = $Z
[mesh]
listen = 198.51.100.20:15022
[socks5]
enabled = false
[http]
enabled = false
[dns]
enabled = false
[publish]
enabled = true
server = 127.0.0.1:$PORT
tsig_name = keymesh-test
tsig_secret_file = tsig.secret
ttl = 30s
EOF
ip addr add 198.51.100.20/32 dev lo
check "daemon starts and publishes" start_daemon "$A"
N=$ID.$Z
check "AAAA is the VIP" waitfor 10 sh -c "test \"\$(${Q[*]} +short $N AAAA)\" = $VIP"
check "TXT carries the key" sh -c "${Q[*]} +short $N TXT | grep -q 'v=keymesh1 k='"
check "SVCB names the mesh listener" sh -c "${Q[*]} +short $N SVCB | grep -qE '^1 \. port=15022 ipv4hint=198\.51\.100\.20'"
"$KM" status --dir "$A" --json > "$T/st.json"
check "status shows the publisher" python3 -c '
import json,sys; p=json.load(open(sys.argv[1]))["dns"]["publish"]; assert p["ok"] >= 1 and p["last"]=="ok", p' "$T/st.json"
stop_daemon
check "exit 0 after SIGTERM" test "$DRC" -eq 0
"${Q[@]}" $N AAAA > "$T/nx"
check "clean shutdown removed the records" contains "$T/nx" "status: NXDOMAIN"
chmod 644 "$A/tsig.secret"
expect_exit 1 "a TSIG secret readable by others is refused" "$KM" up --dir "$A"
check "... naming the file" contains "$T/err" "tsig.secret"
check "no sanitizer report" sh -c "! grep -qE 'ERROR: AddressSanitizer|runtime error:|LeakSanitizer' '$A.log'"
finish
