#!/usr/bin/env bash
# Stock OpenSSH and keymesh (DESIGN.md section 4), both ways, host keys always verified
# (StrictHostKeyChecking=yes, BatchMode=yes, known_hosts made from `keymesh id --known-hosts`
# or the sshd's own host key):
#   - ssh -W and ssh -N -L against a keymesh node (B), a port that is not exposed refused;
#   - ssh -o ProxyCommand='keymesh connect ...' through A to a plain sshd behind B, and to
#     B's own mesh port (B exposes it) with the known_hosts line used verbatim;
#   - a plain sshd as a keymesh peer of A ([peer sshd] user = root): A's SOCKS5 and HTTP
#     proxies reach a server through the sshd's direct-tcpip.
# Sanitizer reports in any daemon's log fail the test.
source "$(dirname "$0")/lib.sh"
HELPER="$(cd "$(dirname "$0")" && pwd)/mesh_helper.py"
SAN='ERROR: AddressSanitizer|runtime error:|LeakSanitizer|AddressSanitizer:DEADLYSIGNAL'

A=$T/a B=$T/b E=$T/e S=$T/sshd
for d in "$A" "$B" "$E"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
nid() { "$KM" derive --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'; }
IA=$(nid "$A/node.key.pub") IB=$(nid "$B/node.key.pub") IE=$(nid "$E/node.key.pub")
SUF=mesh.internal

# A plain sshd on 127.0.0.1:12222 with its own ed25519 host key; root may log in with A's
# node key. It forwards TCP (direct-tcpip) for it.
mkdir -p "$S" && chmod 700 "$S"
ssh-keygen -q -t ed25519 -N '' -C sshd-host -f "$S/host_ed25519" >/dev/null
cp "$A/node.key.pub" "$S/authorized_keys"
cat >"$S/sshd_config" <<EOF
Port 12222
ListenAddress 127.0.0.1
HostKey $S/host_ed25519
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
EOF
IS=$(nid "$S/host_ed25519.pub")
made_run_sshd=
[ -d /run/sshd ] || { mkdir -p /run/sshd && made_run_sshd=1; }   # sshd's privsep directory

# A dials B and the sshd. B exposes an HTTP server, the sshd's port and its own mesh port.
cat >"$A/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = 127.0.0.1:16001
[socks5]
listen = 127.0.0.1:11080
[http]
listen = 127.0.0.1:18080
[peer bee]
node = $IB
address = 127.0.0.1:16002
[peer sshd]
node = $IS
address = 127.0.0.1:12222
user = root
# Another node's ID at the sshd's address: the sshd's host key does not match it.
[peer notsshd]
node = $IE
address = 127.0.0.1:12222
user = root
EOF
cat >"$B/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = 127.0.0.1:16002
expose = 18999
expose = 12222
expose = 16002
expose = 17779
[socks5]
enabled = false
[http]
enabled = false
[peer ay]
node = $IA
EOF

mkdir -p "$T/www"
head -c 100000 /dev/urandom >"$T/www/blob"
echo "not exposed" >"$T/blob2"
python3 "$HELPER" http 18999 "$T/www" 2>"$T/http.log" & PIDS+=($!); disown $!
python3 "$HELPER" http 18998 "$T" 2>"$T/httpx.log" & PIDS+=($!); disown $!
/usr/sbin/sshd -D -e -f "$S/sshd_config" 2>"$S/log" & PIDS+=($!); disown $!
port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"; }
for p in 18999 18998 12222; do check "server on $p is up" waitfor 10 port_open "$p"; done

check "daemon B starts" start_daemon "$B"; PB=$DPID
check "daemon A starts" start_daemon "$A"; PA=$DPID

# known_hosts for B on 127.0.0.1:16002: `keymesh id --known-hosts` with the host rewritten.
"$KM" id --dir "$B" --known-hosts >"$T/kh_b_mesh"
check "known_hosts line names B's FQDN and VIP on its mesh port" \
    contains "$T/kh_b_mesh" "^\[$IB.$SUF\]:16002,\[fd6b:[0-9a-f:]*\]:16002 ssh-ed25519 "
sed -E 's/^[^ ]+ /[127.0.0.1]:16002 /' "$T/kh_b_mesh" >"$T/kh_b"
# (ssh takes the first value of an option: no LogLevel here, so INFO messages stay visible.)
SSHOPTS=(-F /dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10
         -o IdentitiesOnly=yes)
http_req() { printf 'GET /%s HTTP/1.0\r\nHost: x\r\n\r\n' "$1"; }
body_is() { python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); e=open(sys.argv[2],"rb").read()
h,_,b=d.partition(b"\r\n\r\n"); assert h.startswith(b"HTTP/1.0 200"), h[:40]; assert b==e' "$1" "$2"; }

# ---- ssh -W against B ----
http_req blob | timeout 20 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_b" -i "$A/node.key" \
    -p 16002 -W localhost:18999 keymesh@127.0.0.1 >"$T/w.out" 2>"$T/w.err"
check "ssh -W localhost:18999 via B (exit $?)" test -s "$T/w.out"
check "ssh -W: body byte-exact" body_is "$T/w.out" "$T/www/blob"
sed 's/^/    /' "$T/w.err" | head -5
http_req blob2 | timeout 20 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_b" -i "$A/node.key" \
    -p 16002 -W localhost:18998 keymesh@127.0.0.1 >"$T/w2.out" 2>"$T/w2.err"
r=$?
check "ssh -W to a port B does not expose fails (exit $r)" test "$r" -ne 0 -a "$r" -ne 124
check "... administratively prohibited" contains "$T/w2.err" "administratively prohibited"
check "... B logged the refusal" contains "$B.log" 'refused direct-tcpip to "localhost":18998'
check "... and the server never heard of it" test ! -s "$T/httpx.log"
# An exposed port where nothing listens: the channel open fails (as with sshd), not an empty
# stream that ends at once.
echo | timeout 20 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_b" -i "$A/node.key" \
    -p 16002 -W localhost:17779 keymesh@127.0.0.1 >/dev/null 2>"$T/w3.err"
r=$?
check "ssh -W to an exposed port where nothing listens fails (exit $r)" test "$r" = 255
# (libssh 0.10 can only say "administratively prohibited"; sshd would say "connect failed".)
check "... open failed" contains "$T/w3.err" "open failed"
# A key B does not know the host key for: refused before authentication.
ssh-keygen -q -t ed25519 -N '' -f "$T/other_host" >/dev/null
echo "[127.0.0.1]:16002 $(cut -d' ' -f1,2 "$T/other_host.pub")" >"$T/kh_wrong"
expect_exit 255 "ssh -W with a known_hosts entry for another key is refused" \
    timeout 20 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_wrong" \
    -i "$A/node.key" -p 16002 -W localhost:18999 keymesh@127.0.0.1
check "... as a host key mismatch" contains "$T/err" "HOST IDENTIFICATION HAS CHANGED"

# ---- ssh -N -L against B ----
timeout 60 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_b" \
    -o ExitOnForwardFailure=yes -i "$A/node.key" -p 16002 -N -L 127.0.0.1:13000:localhost:18999 \
    -L 127.0.0.1:13001:localhost:18998 keymesh@127.0.0.1 2>"$T/l.err" & lpid=$!; PIDS+=("$lpid")
check "ssh -N -L forwards are listening" waitfor 10 sh -c "port_open() { python3 -c 'import socket,sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 1)' \"\$1\"; }; port_open 13000 && port_open 13001"
for i in 1 2 3; do
    rm -f "$T/got"
    check "curl through ssh -L #$i" curl -sS -m 20 -o "$T/got" http://127.0.0.1:13000/blob
    check "curl through ssh -L #$i: byte-exact" cmp -s "$T/got" "$T/www/blob"
done
r=$(curl -sS -m 20 -o /dev/null http://127.0.0.1:13001/blob2 2>/dev/null; echo $?)
check "curl through an -L to a port B does not expose fails at once (exit $r: 52 or 56)" \
    sh -c "[ $r = 52 ] || [ $r = 56 ]"
check "... ssh says administratively prohibited" waitfor 5 contains "$T/l.err" "open failed: administratively prohibited"
check "... and the unexposed server never heard of it" test ! -s "$T/httpx.log"
kill "$lpid" 2>/dev/null; wait "$lpid" 2>/dev/null

# ---- ProxyCommand keymesh connect ----
# (1) to the plain sshd behind B (B exposes 12222), host key verified under the mesh name.
echo "[bee.$SUF]:12222 $(cut -d' ' -f1,2 "$S/host_ed25519.pub")" >"$T/kh_sshd_via_b"
expect_exit 0 "ssh -o ProxyCommand='keymesh connect' to an sshd behind B runs a command" \
    timeout 30 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_sshd_via_b" -i "$A/node.key" \
    -o ProxyCommand="$KM connect --dir $A %h %p" -p 12222 root@bee.$SUF echo via-the-mesh
check "... and its output came back" contains "$T/out" "^via-the-mesh$"
# (2) to B's own mesh port (exposed), nested: the known_hosts line used verbatim.
http_req blob | timeout 30 ssh "${SSHOPTS[@]}" -o UserKnownHostsFile="$T/kh_b_mesh" \
    -i "$A/node.key" -o ProxyCommand="$KM connect --dir $A %h %p" -p 16002 \
    -W localhost:18999 "keymesh@$IB.$SUF" >"$T/pc.out" 2>"$T/pc.err"
check "ProxyCommand to B's mesh port, then -W (known_hosts verbatim)" body_is "$T/pc.out" "$T/www/blob"
sed 's/^/    /' "$T/pc.err" | head -5

# ---- a plain sshd as A's peer ----
socks_get() { curl -sS -m 20 --socks5-hostname 127.0.0.1:11080 -o "$2" "$1"; }
http_get() { curl -sS -m 20 -x http://127.0.0.1:18080 -o "$2" "$1"; }
for via in socks http; do
    for host in sshd.$SUF "$IS.$SUF"; do
        rm -f "$T/got"
        check "$via to the sshd peer as ${host:0:12}... reaches 18999" ${via}_get "http://$host:18999/blob" "$T/got"
        check "$via to the sshd peer as ${host:0:12}...: byte-exact" cmp -s "$T/got" "$T/www/blob"
    done
done
rm -f "$T/got"
check "keymesh connect to the sshd peer" sh -c "printf 'GET /blob HTTP/1.0\r\n\r\n' | timeout 20 '$KM' connect --dir '$A' sshd.$SUF 18999 >'$T/got'"
check "... byte-exact" body_is "$T/got" "$T/www/blob"
# The sshd answers a direct-tcpip open to a closed port with OPEN_FAILURE "connect failed"
# (SSH_OPEN_CONNECT_FAILED): SOCKS5 0x05, HTTP 502, not a policy refusal.
r=$(python3 "$HELPER" socks 11080 sshd.$SUF 17779)
check "SOCKS5 through the sshd peer to a closed port: reply 0x05 (got $r)" test "$r" = 5
check "HTTP proxy through the sshd peer to a closed port: 502" test "$(curl -s -m 20 -o /dev/null \
    -w '%{http_code}' -x http://127.0.0.1:18080 "http://sshd.$SUF:17779/")" = 502
expect_exit 1 "keymesh connect through the sshd peer to a closed port exits 1" \
    timeout 20 "$KM" connect --dir "$A" sshd.$SUF 17779 </dev/null
check "... and does not call it a policy refusal" sh -c "! grep -q 'refused by policy' '$T/err'"
"$KM" status --dir "$A" --json >"$T/sa.json"
check "status on A: the sshd peer is connected with an AES-GCM or ChaCha20 cipher" python3 -c '
import json,re,sys; p={x["name"]: x for x in json.load(open(sys.argv[1]))["peers"]}
s=p["sshd"]; assert s["node_id"]==sys.argv[2] and s["state"]=="connected", s
assert re.search("aes(128|256)-gcm|chacha20-poly1305", s.get("cipher","")), s' "$T/sa.json" "$IS"
check "sshd accepted A's key for root" contains "$S/log" "Accepted publickey for root"
r=$(python3 "$HELPER" socks 11080 notsshd.$SUF 18999)
check "a peer whose node ID does not match the sshd's host key is refused (SOCKS5 reply $r)" \
    sh -c "[ '$r' != 0 ] && [ '$r' != timeout ]"
check "... and A logged the mismatch" contains "$A.log" "host key does not match node ${IE:0:12}"

# ---- shutdown ----
for n in A B; do
    eval "DPID=\$P$n"; stop_daemon
    check "$n exits 0 after SIGTERM (got $DRC)" test "$DRC" -eq 0
done
for f in "$A.log" "$B.log"; do
    check "no sanitizer report in $(basename "$f")" sh -c "! grep -Eq '$SAN' '$f'"
    grep -E -A5 "$SAN" "$f" | head -20 | sed 's/^/    /'
done
[ -n "$made_run_sshd" ] && rmdir /run/sshd 2>/dev/null
finish
