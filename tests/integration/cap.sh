#!/usr/bin/env bash
# Capabilities (DESIGN.md section 8, docs/CAPABILITIES.md) end to end with stock OpenSSH:
#   - `keymesh grant` output read by `ssh-keygen -L`, installed with `keymesh cap add`;
#   - B (the target) trusts its own key and an owner key; A (the grantee) holds grants and
#     its daemon presents them when it dials B;
#   - stock ssh through `keymesh connect` with CertificateFile: the permission matrix
#     {port N, shell, exec, expose} x {granted, not granted, expired, revoked, wrong node};
#   - an interactive shell through a pty (script(1)): size, tty, TERM, exit status;
#   - shell and exec with exact output and exit status, stdin and EOF, 1 MB byte-exact;
#   - a grant that expires during a live session disconnects it;
#   - a plain sshd with TrustedUserCAKeys = the owner key accepts the same certificate.
# Sanitizer reports in any daemon's log fail the test.
source "$(dirname "$0")/lib.sh"
HELPER="$(cd "$(dirname "$0")" && pwd)/mesh_helper.py"
SAN='ERROR: AddressSanitizer|runtime error:|LeakSanitizer|AddressSanitizer:DEADLYSIGNAL'

A=$T/a B=$T/b C=$T/c O=$T/owner
for d in "$A" "$B" "$C"; do "$KM" init --dir "$d" >/dev/null || exit 1; done
nid() { "$KM" derive --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'; }
IA=$(nid "$A/node.key.pub") IB=$(nid "$B/node.key.pub") IC=$(nid "$C/node.key.pub")
SUF=mesh.internal
mkdir -p "$O" && chmod 700 "$O"
# A local account for C's grants (removed on every exit path).
U=kmcap$$ made_user=
if useradd -M -d /nonexistent -s /bin/sh "$U" 2>/dev/null; then
    made_user=1
    trap 'userdel -f "$U" >/dev/null 2>&1; cleanup' EXIT
fi
ssh-keygen -q -t ed25519 -N '' -C owner -f "$O/owner" >/dev/null

# B: the target. Trusts the owner key; A is no configured peer of B. Port 18999 serves a
# blob, 18998 serves something never granted.
cat >"$B/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = 127.0.0.1:16002
[socks5]
enabled = false
[http]
enabled = false
[cap]
owner = $(cat "$O/owner.pub")
account = root
account_for = $IC $U
clock_skew = 0s
EOF
cat >"$A/keymesh.conf" <<EOF
[dns]
enabled = false
[mesh]
listen = 127.0.0.1:16001
[socks5]
enabled = false
[http]
enabled = false
[peer bee]
node = $IB
address = 127.0.0.1:16002
EOF

mkdir -p "$T/www"
head -c 100000 /dev/urandom >"$T/www/blob"
python3 "$HELPER" http 18999 "$T/www" 2>"$T/http.log" & PIDS+=($!); disown $!
python3 "$HELPER" http 18998 "$T/www" 2>"$T/httpx.log" & PIDS+=($!); disown $!
port_open() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"; }
for p in 18999 18998; do check "server on $p is up" waitfor 10 port_open "$p"; done

# ---- grant, ssh-keygen -L, cap add ----
expect_exit 0 "grant: port 18999 to A, signed by B's node key" \
    "$KM" grant --dir "$B" --to "$A/node.key.pub" --allow port:18999 --valid 1h -o "$T/port.cert"
check "... ssh-keygen -L reads it" sh -c "ssh-keygen -L -f '$T/port.cert' >'$T/L' 2>&1"
check "... as a user certificate" contains "$T/L" "Type: ssh-ed25519-cert-v01@openssh.com user certificate"
check "... principal is B's node ID" contains "$T/L" "^ *$IB\$"
check "... extensions permit-port-forwarding and permit-ports@keymesh" \
    sh -c "grep -q permit-port-forwarding '$T/L' && grep -q 'permit-ports@keymesh' '$T/L'"
check "... signed by B's key" contains "$T/L" "Signing CA: ED25519 $(ssh-keygen -l -f "$B/node.key.pub" | cut -d' ' -f2)"
check "... no pty for a port grant" sh -c "! grep -q permit-pty '$T/L'"
expect_exit 0 "grant: shell to A by the owner key (--signer, --node B)" \
    "$KM" grant --dir "$B" --to "$IA" --node "$IB" --signer "$O/owner" --allow shell \
    --valid 1h -o "$T/shell.cert"
ssh-keygen -L -f "$T/shell.cert" >"$T/L2"
check "... ssh-keygen -L: permit-pty, signed by the owner key" \
    sh -c "grep -q permit-pty '$T/L2' && grep -q 'Signing CA: ED25519 $(ssh-keygen -l -f "$O/owner.pub" | cut -d' ' -f2)' '$T/L2'"
expect_exit 0 "grant: exec:'echo exec-ok' to A" \
    "$KM" grant --dir "$B" --to "$IA" --allow "exec:echo exec-ok; exit 7" --valid 1h -o "$T/exec.cert"
check "... ssh-keygen -L shows the force-command" contains <(ssh-keygen -L -f "$T/exec.cert") "force-command echo exec-ok; exit 7"
expect_exit 2 "grant without --allow is a usage error" "$KM" grant --dir "$B" --to "$IA" --valid 1h
expect_exit 2 "grant with shell and exec is a usage error" \
    "$KM" grant --dir "$B" --to "$IA" --allow shell --allow exec:ls --valid 1h
expect_exit 2 "grant --signer without --node is a usage error" \
    "$KM" grant --dir "$B" --to "$IA" --signer "$O/owner" --allow shell --valid 1h
expect_exit 1 "cap add refuses a certificate for another key" "$KM" cap add --dir "$C" "$T/port.cert"
check "... saying so" contains "$T/err" "not to this node"
expect_exit 0 "cap add (A) the port grant" "$KM" cap add --dir "$A" "$T/port.cert"
"$KM" cap list --dir "$A" --json >"$T/list.json"
check "cap list --json (A): one held grant, valid, port:18999" python3 -c '
import json,sys; j=json.load(open(sys.argv[1])); h=j["held"]
assert len(h)==1 and h[0]["status"]=="valid" and h[0]["allow"]=="port:18999" and h[0]["nodes"]==[sys.argv[2]], j' "$T/list.json" "$IB"
"$KM" cap list --dir "$B" --json >"$T/listb.json"
check "cap list --json (B): three issued" python3 -c '
import json,sys; j=json.load(open(sys.argv[1])); assert len(j["issued"])==3 and j["held"]==[], j' "$T/listb.json"

# The daemon's own environment must not reach session children.
KEYMESH_LEAK=leak check "daemon B starts" start_daemon "$B"; PB=$DPID
check "daemon A starts" start_daemon "$A"; PA=$DPID

SSHOPTS=(-F /dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10
         -o IdentitiesOnly=yes -o UserKnownHostsFile="$T/kh" -i "$A/node.key")
"$KM" id --dir "$B" --known-hosts >"$T/kh"
PROXY=(-o ProxyCommand="$KM connect --dir $A %h %p" -p 16002)
http_req() { printf 'GET /%s HTTP/1.0\r\nHost: x\r\n\r\n' "$1"; }
body_is() { python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); e=open(sys.argv[2],"rb").read()
h,_,b=d.partition(b"\r\n\r\n"); assert h.startswith(b"HTTP/1.0 200"), h[:40]; assert b==e' "$1" "$2"; }

# port_cell CERT PORT: ssh -W localhost:PORT to B through `keymesh connect`, presenting CERT.
port_cell() {
    http_req blob | timeout 30 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$1" \
        -W "localhost:$2" "alice@$IB.$SUF" >"$T/cell.out" 2>"$T/cell.err"
}

# ---- the mesh hop itself: A's daemon presents its held certificate to B ----
rm -f "$T/got"
check "keymesh connect (A) to B:18999 with the held port grant" sh -c \
    "http_req() { printf 'GET /blob HTTP/1.0\r\n\r\n'; }; http_req | timeout 20 '$KM' connect --dir '$A' $IB.$SUF 18999 >'$T/got'"
check "... byte-exact" body_is "$T/got" "$T/www/blob"
check "... B logged the certificate login" contains "$B.log" "certificate serial [0-9]* accepted"
expect_exit 1 "keymesh connect (A) to B:18998 (not granted) is refused" \
    timeout 20 "$KM" connect --dir "$A" "$IB.$SUF" 18998 </dev/null
check "... B logged the refusal" contains "$B.log" 'refused direct-tcpip to "localhost":18998'
check "... and the server on 18998 never heard of it" test ! -s "$T/httpx.log"

# ---- port cells with stock ssh (-W) through keymesh connect ----
# (B's mesh port is reachable for A only because A holds a grant: add a shell grant for the
# nested sessions.)
"$KM" cap add --dir "$A" "$T/shell.cert" >/dev/null
port_cell "$T/port.cert" 18999
check "matrix port/granted: ssh -W localhost:18999 byte-exact" body_is "$T/cell.out" "$T/www/blob"
port_cell "$T/port.cert" 18998; r=$?
check "matrix port/not granted: ssh -W localhost:18998 fails (exit $r)" test "$r" -ne 0 -a "$r" -ne 124
check "... administratively prohibited" contains "$T/cell.err" "administratively prohibited"

# ---- shell and exec cells ----
# ssh_cell CERT [ARGS...]: stock ssh to B through keymesh connect presenting CERT.
ssh_cell() {
    local cert=$1; shift
    timeout 30 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$cert" "alice@$IB.$SUF" "$@" \
        >"$T/cell.out" 2>"$T/cell.err" </dev/null
}
ssh_cell "$T/shell.cert" 'echo "hello from $(id -un)"; echo "env: HOME=$HOME USER=$USER X=${KEYMESH_LEAK:-none}"; exit 3'; r=$?
check "matrix shell/granted: exec of a command exits 3 (got $r)" test "$r" = 3
check "... its exact output" diff <(printf 'hello from root\nenv: HOME=/root USER=root X=none\n') "$T/cell.out"
ssh_cell "$T/exec.cert"; r=$?
check "matrix exec/granted: the forced command runs, exits 7 (got $r)" test "$r" = 7
check "... exact output" diff <(printf 'exec-ok\n') "$T/cell.out"
ssh_cell "$T/exec.cert" 'echo not-this'; r=$?
check "matrix exec/granted: another command still runs only the forced one (exit $r)" \
    sh -c "[ $r = 7 ] && [ \"\$(cat '$T/cell.out')\" = exec-ok ]"
ssh_cell "$T/port.cert" 'echo nope'; r=$?
check "matrix shell/not granted (port grant): refused (exit $r)" test "$r" = 255
check "... the session channel is refused" contains "$T/cell.err" "open failed"
check "... B logged it" contains "$B.log" "session channel refused: the capability grants neither shell nor exec"
check "... and nothing ran" test ! -s "$T/cell.out"
# stdin goes to the command; EOF ends it.
printf 'line one\nline two\n' | timeout 30 ssh "${SSHOPTS[@]}" "${PROXY[@]}" \
    -o CertificateFile="$T/shell.cert" "alice@$IB.$SUF" 'cat; echo done' >"$T/cell.out" 2>"$T/cell.err"
check "shell: stdin reaches the command and EOF ends it" \
    diff <(printf 'line one\nline two\ndone\n') "$T/cell.out"
# 1 MB through cat, byte for byte.
head -c 1000000 /dev/urandom >"$T/mb"
timeout 60 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/shell.cert" \
    "alice@$IB.$SUF" 'cat' <"$T/mb" >"$T/mb.out" 2>"$T/cell.err"
check "shell: 1 MB through cat, byte-exact" cmp -s "$T/mb" "$T/mb.out"

# ---- an interactive shell on a pty, driven through script(1) ----
# script gives ssh a terminal (-tt forces the pty request); the remote side must see a tty of
# the size ssh announced, run what is typed, and the exit status must come back.
cat >"$T/typed" <<'EOF2'
stty size; tty | sed 's/[0-9]*$/N/'; echo "term=$TERM"
exit 5
EOF2
SSHCMD="ssh ${SSHOPTS[*]} -o 'ProxyCommand=$KM connect --dir $A %h %p' -p 16002 -o CertificateFile=$T/shell.cert -tt alice@$IB.$SUF"
(sleep 1; cat "$T/typed"; sleep 5) | timeout 30 script -qefc "stty cols 123 rows 45; TERM=xterm $SSHCMD" \
    /dev/null >"$T/pty.out" 2>&1; r=$?
tr -d '\r' <"$T/pty.out" >"$T/pty.txt"
check "pty shell: the exit status 5 comes back through script (got $r)" test "$r" = 5
check "... the remote pty has the announced size (45 123)" contains "$T/pty.txt" "45 123\$"
check "... stdin is a tty" contains "$T/pty.txt" "^/dev/pts/N\$"
check "... TERM from the pty request" contains "$T/pty.txt" "^term=xterm\$"
check "... B logged a login shell on a pty" contains "$B.log" 'login shell as "root" on a pty'
[ "$r" = 5 ] || sed 's/^/    /' "$T/pty.txt" | head -10
# window-change: the client's terminal shrinks during the session; the remote pty follows.
(sleep 9) | timeout 30 script -qefc "stty cols 123 rows 45; TERM=xterm $SSHCMD 'sleep 3; stty size' </dev/tty & sleep 1.5; stty cols 77 rows 22; kill -WINCH \$!; wait \$!" \
    /dev/null >"$T/wc.out" 2>&1; r=$?
check "pty window-change: the remote size follows the client's (22 77, exit $r)" \
    sh -c "tr -d '\r' <'$T/wc.out' | grep -q '^22 77\$'"
[ "$r" = 0 ] || sed "s/^/    /" "$T/wc.out" | head -5
# A pty is refused for a grant without permit-pty (exec grants have none); ssh -tt treats
# that as fatal (OpenSSH closes the channel when a forced tty fails).
timeout 30 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/exec.cert" -tt \
    "alice@$IB.$SUF" </dev/null >"$T/cell.out" 2>"$T/cell.err"; r=$?
check "exec grant with -tt: the pty is refused (exit $r)" test "$r" = 255
check "... ssh was told" contains "$T/cell.err" "PTY allocation request failed"
check "... B logged it" contains "$B.log" "pty refused (not granted)"

# ---- [cap] account_for: another grantee's sessions run as its own local account ----
"$KM" grant --dir "$B" --to "$C/node.key.pub" --allow shell --valid 1h -o "$T/c-shell.cert" 2>/dev/null
if [ -n "$made_user" ]; then
    timeout 30 ssh "${SSHOPTS[@]}" -i "$C/node.key" "${PROXY[@]}" -o CertificateFile="$T/c-shell.cert" \
        "carol@$IB.$SUF" 'id -un; echo "$HOME"; pwd' >"$T/cell.out" 2>"$T/cell.err" </dev/null; r=$?
    check "account_for: C's shell runs as $U (exit $r)" diff <(printf '%s\n/nonexistent\n/\n' "$U") "$T/cell.out"
else
    bad "account_for: could not create the local user $U"
fi

# ---- signals (a libssh client: stock ssh cannot send them) ----
# A background job of a non-interactive shell ignores INT, so the INT case's sleep must not
# hold the session's output (EOF, and so the end of the session, would wait for it, as with
# OpenSSH's sshd) and the trap ends it.
DRV=${KM_SESS_DRIVER:-$(dirname "$KM")/../../tests/integration/sess_driver}
timeout 40 "$DRV" 127.0.0.1 16002 "$B/node.key.pub" "$A/node.key" "$T/shell.cert" alice \
    'echo ready; sleep 30; echo not-killed' TERM >"$T/sig.out" 2>"$T/sig.err"; r=$?
check "signal TERM: the child is killed, exit-signal TERM comes back (exit $r)" \
    diff <(printf 'ready\nexit-signal TERM\n') "$T/sig.out"
[ "$r" = 0 ] || sed "s/^/    out: /" "$T/sig.out" | head -3
[ "$r" = 0 ] || sed "s/^/    err: /" "$T/sig.err" | tail -8
timeout 40 "$DRV" 127.0.0.1 16002 "$B/node.key.pub" "$A/node.key" "$T/shell.cert" alice \
    'trap "echo got-int; kill \$!; exit 9" INT; echo ready; sleep 30 </dev/null >/dev/null 2>&1 & wait' \
    INT >"$T/sig.out" 2>"$T/sig.err"; r=$?
check "signal INT: a trap in the child runs, exit-status 9 comes back (exit $r)" \
    diff <(printf 'ready\ngot-int\nexit-status 9\n') "$T/sig.out"
[ "$r" = 0 ] || sed "s/^/    out: /" "$T/sig.out" | head -3
[ "$r" = 0 ] || sed "s/^/    err: /" "$T/sig.err" | tail -8

# ---- certificates made by ssh-keygen, good and bad, and a tampered one ----
cp "$A/node.key.pub" "$T/kg.pub"
ssh-keygen -q -s "$O/owner" -I kg-good -n "$IB" -V -1m:+1h -O clear -O extension:permit-shell@keymesh \
    -z 101 "$T/kg.pub" && mv "$T/kg-cert.pub" "$T/kg-good.cert"
ssh_cell "$T/kg-good.cert" 'echo via-ssh-keygen-cert'; r=$?
check "an ssh-keygen-made owner certificate with permit-shell@keymesh works (exit $r)" \
    diff <(echo via-ssh-keygen-cert) "$T/cell.out"
ssh-keygen -q -s "$O/owner" -I kg-nyv -n "$IB" -V +1h:+2h -O extension:permit-shell@keymesh \
    -z 102 "$T/kg.pub" && mv "$T/kg-cert.pub" "$T/kg-nyv.cert"
ssh-keygen -q -s "$O/owner" -I kg-nop -V -1m:+1h -O extension:permit-shell@keymesh \
    -z 103 "$T/kg.pub" && mv "$T/kg-cert.pub" "$T/kg-nop.cert"
ssh-keygen -q -s "$O/owner" -I kg-crit -n "$IB" -V -1m:+1h -O extension:permit-shell@keymesh \
    -O critical:no-such-option@example.com=x -z 104 "$T/kg.pub" && mv "$T/kg-cert.pub" "$T/kg-crit.cert"
for cell in "not yet valid:kg-nyv:not yet valid" "empty principals:kg-nop:no principals" \
            "unknown critical option:kg-crit:unknown critical option \"no-such-option@example.com\""; do
    IFS=: read -r what file reason <<<"$cell"
    ssh_cell "$T/$file.cert" 'echo ran'; r=$?
    check "ssh-keygen cert, $what: refused (exit $r)" test "$r" = 255
    check "... nothing ran, B logged: $reason" \
        sh -c "! grep -q ran '$T/cell.out' && grep -q 'refused: $reason' '$B.log'"
done
# Tampered: one byte of the signature flipped (stock ssh checks the CA signature itself when
# loading a certificate, so the libssh driver presents it).
python3 - "$T/shell.cert" "$T/tampered.cert" <<'EOP'
import base64, sys
t = open(sys.argv[1]).read().split()
b = bytearray(base64.b64decode(t[1])); b[-5] ^= 0x01
open(sys.argv[2], "w").write("%s %s tampered\n" % (t[0], base64.b64encode(bytes(b)).decode()))
EOP
timeout 40 "$DRV" 127.0.0.1 16002 "$B/node.key.pub" "$A/node.key" "$T/tampered.cert" alice \
    'echo ran' TERM >"$T/tamp.out" 2>"$T/tamp.err"; r=$?
check "a tampered certificate is refused (driver exit $r, authentication failed)" \
    sh -c "[ $r = 1 ] && grep -q authentication '$T/tamp.err' && ! grep -q ran '$T/tamp.out'"
check "... B logged: bad signature" contains "$B.log" "refused: bad signature"

# ---- shell/exec x expired, revoked, wrong node ----
"$KM" grant --dir "$B" --to "$IA" --allow shell --valid 1s -o "$T/shell-exp.cert" 2>/dev/null
"$KM" grant --dir "$B" --to "$IA" --allow exec:true --valid 1h -o "$T/exec-rev.cert" 2>/dev/null
"$KM" grant --dir "$B" --to "$IA" --node "$IC" --allow shell --valid 1h -o "$T/shell-wrong.cert" 2>/dev/null
"$KM" cap revoke --dir "$B" "$(ssh-keygen -L -f "$T/exec-rev.cert" | sed -n 's/^ *Serial: //p')" >/dev/null
sleep 2
for cell in "shell/expired:shell-exp:expired" "exec/revoked:exec-rev:is revoked" \
            "shell/wrong node:shell-wrong:principals do not name this node"; do
    IFS=: read -r what file reason <<<"$cell"
    ssh_cell "$T/$file.cert" 'echo ran'; r=$?
    check "matrix $what: refused (exit $r)" test "$r" = 255
    check "... permission denied, nothing ran" sh -c "grep -q 'Permission denied' '$T/cell.err' && ! grep -q ran '$T/cell.out'"
    check "... B logged: $reason" contains "$B.log" "refused: .*$reason"
done

# ---- a shell grant that expires during a live session disconnects it ----
"$KM" grant --dir "$B" --to "$IA" --allow shell --valid 10s -o "$T/shell-live.cert" 2>/dev/null
timeout 60 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/shell-live.cert" \
    "alice@$IB.$SUF" 'echo started; echo $$ >/tmp/km-cap-live.$PPID; sleep 50; echo survived' \
    >"$T/slive.out" 2>"$T/slive.err" </dev/null & spid=$!; PIDS+=("$spid")
check "live shell: the command started" waitfor 10 contains "$T/slive.out" started
check "live shell: the session is cut when the grant expires (within 20 s)" \
    waitfor 20 sh -c "! kill -0 $spid 2>/dev/null"
wait "$spid"; r=$?
check "... ssh exits 255 (got $r) and the command never finished" \
    sh -c "[ $r = 255 ] && ! grep -q survived '$T/slive.out'"
check "... the remote command was ended too" waitfor 5 sh -c \
    "for f in /tmp/km-cap-live.*; do p=\$(cat \$f); rm -f \$f; ! kill -0 \$p 2>/dev/null || exit 1; done"

# refused_cell WHAT CERT PORT REASON: the certificate login is refused and B says why.
refused_cell() {
    port_cell "$2" "$3"; local r=$?
    check "matrix $1: ssh fails (exit $r)" test "$r" = 255
    check "... permission denied" contains "$T/cell.err" "Permission denied"
    check "... B logged: $4" contains "$B.log" "refused: $4"
}
"$KM" grant --dir "$B" --to "$IA" --allow port:18999 --valid 1s -o "$T/port-exp.cert" 2>/dev/null
"$KM" grant --dir "$B" --to "$IA" --allow port:18999 --valid 1h -o "$T/port-rev.cert" 2>/dev/null
"$KM" grant --dir "$B" --to "$IA" --node "$IC" --allow port:18999 --valid 1h -o "$T/port-wrong.cert" 2>/dev/null
"$KM" grant --dir "$C" --to "$IA" --node "$IB" --allow port:18999 --valid 1h -o "$T/port-signer.cert" 2>/dev/null
SER=$(ssh-keygen -L -f "$T/port-rev.cert" | sed -n 's/^ *Serial: //p')
expect_exit 0 "cap revoke (B) serial $SER" "$KM" cap revoke --dir "$B" "$SER"
sleep 2
refused_cell "port/expired" "$T/port-exp.cert" 18999 "expired"
refused_cell "port/revoked" "$T/port-rev.cert" 18999 "serial $SER is revoked"
refused_cell "port/wrong node" "$T/port-wrong.cert" 18999 "principals do not name this node"
refused_cell "port/untrusted signer" "$T/port-signer.cert" 18999 "signer $IC is not trusted"
"$KM" cap list --dir "$B" --json >"$T/listb.json"
check "cap list (B) shows the revoked and the expired grant" python3 -c '
import json,sys; j={x["serial"]: x["status"] for x in json.load(open(sys.argv[1]))["issued"]}
assert j[int(sys.argv[2])]=="revoked", j; assert "expired" in j.values(), j' "$T/listb.json" "$SER"

# ---- a grant that expires during a live session disconnects it ----
"$KM" grant --dir "$B" --to "$IA" --allow port:18999 --valid 10s -o "$T/port-live.cert" 2>/dev/null
timeout 60 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/port-live.cert" \
    -o ExitOnForwardFailure=yes -N -L 127.0.0.1:13000:localhost:18999 "alice@$IB.$SUF" \
    2>"$T/live.err" & lpid=$!; PIDS+=("$lpid")
check "live: ssh -N -L with a 10 s grant is up" waitfor 10 port_open 13000
rm -f "$T/got"
check "live: curl through it before expiry, byte-exact" sh -c \
    "curl -sS -m 10 -o '$T/got' http://127.0.0.1:13000/blob && cmp -s '$T/got' '$T/www/blob'"
t0=$(date +%s)
check "live: the session ends when the grant expires (within 20 s)" \
    waitfor 20 sh -c "! kill -0 $lpid 2>/dev/null"
t1=$(date +%s)
check "... not at once (it lived $((t1 - t0)) s more)" test $((t1 - t0)) -ge 2
check "... B logged the expiry" contains "$B.log" "expired: disconnecting"
wait "$lpid" 2>/dev/null

# ---- a revocation ends a live session too ----
"$KM" grant --dir "$B" --to "$IA" --allow shell --valid 1h -o "$T/shell-live2.cert" 2>/dev/null
timeout 60 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/shell-live2.cert" \
    "alice@$IB.$SUF" 'echo started; sleep 50; echo survived' \
    >"$T/rlive.out" 2>"$T/rlive.err" </dev/null & spid=$!; PIDS+=("$spid")
check "live revoke: the command started" waitfor 10 contains "$T/rlive.out" started
SER2=$(ssh-keygen -L -f "$T/shell-live2.cert" | sed -n 's/^ *Serial: //p')
"$KM" cap revoke --dir "$B" "$SER2" >/dev/null
check "live revoke: the session ends within 10 s of cap revoke" \
    waitfor 10 sh -c "! kill -0 $spid 2>/dev/null"
wait "$spid"; r=$?
check "... ssh exits 255 (got $r), the command never finished" \
    sh -c "[ $r = 255 ] && ! grep -q survived '$T/rlive.out'"
check "... B logged why" contains "$B.log" "certificate serial $SER2 no longer valid (serial $SER2 is revoked): disconnecting"

# ---- expose: reverse forwards (ssh -R) ----
"$KM" grant --dir "$B" --to "$IA" --allow expose --valid 1h -o "$T/expose.cert" 2>/dev/null
timeout 60 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/expose.cert" \
    -o ExitOnForwardFailure=yes -N -R 18500:localhost:18999 "alice@$IB.$SUF" \
    2>"$T/r.err" & rpid=$!; PIDS+=("$rpid")
check "matrix expose/granted: B listens on 127.0.0.1:18500 for the client" waitfor 10 port_open 18500
for i in 1 2; do
    rm -f "$T/got"
    check "... curl to B's 18500 reaches the client's 18999 #$i, byte-exact" sh -c \
        "curl -sS -m 10 -o '$T/got' http://127.0.0.1:18500/blob && cmp -s '$T/got' '$T/www/blob'"
done
check "... B logged the forward" contains "$B.log" "reverse forward: 127.0.0.1:18500 now reaches the client"
kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null
check "... and closes it when the session ends" waitfor 10 sh -c "! python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 18500), 1)' 2>/dev/null"
timeout 30 ssh "${SSHOPTS[@]}" "${PROXY[@]}" -o CertificateFile="$T/port.cert" \
    -o ExitOnForwardFailure=yes -N -R 18501:localhost:18999 "alice@$IB.$SUF" \
    </dev/null >/dev/null 2>"$T/r2.err"; r=$?
check "matrix expose/not granted (port grant): ssh -R fails (exit $r)" test "$r" = 255
check "... remote port forwarding failed" contains "$T/r2.err" "remote port forwarding failed"
check "... B logged why" contains "$B.log" "reverse forward of port 18501 refused: the capability does not grant expose"
"$KM" grant --dir "$B" --to "$IA" --allow expose --valid 1s -o "$T/expose-exp.cert" 2>/dev/null
"$KM" grant --dir "$B" --to "$IC" --allow expose --valid 1h -o "$T/expose-rev.cert" 2>/dev/null
"$KM" grant --dir "$B" --to "$IA" --node "$IC" --allow expose --valid 1h -o "$T/expose-wrong.cert" 2>/dev/null
# C's key (C's grants only: A's daemon keeps its mesh hop to B).
"$KM" cap revoke --dir "$B" --key "$(cat "$C/node.key.pub")" >/dev/null
sleep 2
for cell in "expose/expired:expose-exp:expired" "expose/revoked:expose-rev:key $IC is revoked" \
            "expose/wrong node:expose-wrong:principals do not name this node"; do
    IFS=: read -r what file reason <<<"$cell"
    timeout 30 ssh "${SSHOPTS[@]}" -i "$C/node.key" "${PROXY[@]}" -o CertificateFile="$T/$file.cert" \
        -o ExitOnForwardFailure=yes -N -R 18502:localhost:18999 "alice@$IB.$SUF" \
        </dev/null >/dev/null 2>"$T/cell.err"; r=$?
    check "matrix $what: refused (exit $r)" test "$r" = 255
    check "... permission denied" contains "$T/cell.err" "Permission denied"
    [ "$what" = "expose/expired" ] || check "... B logged: $reason" contains "$B.log" "refused: .*$reason"
done

# ---- a plain sshd with TrustedUserCAKeys = the owner key accepts the same certificate ----
S=$T/sshd
mkdir -p "$S/principals" && chmod 700 "$S"
ssh-keygen -q -t ed25519 -N '' -C sshd-host -f "$S/host" >/dev/null
echo "$IB" >"$S/principals/root"
cat >"$S/sshd_config" <<EOF
Port 12223
ListenAddress 127.0.0.1
HostKey $S/host
PidFile $S/sshd.pid
TrustedUserCAKeys $O/owner.pub
AuthorizedPrincipalsFile $S/principals/%u
AuthorizedKeysFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
LogLevel VERBOSE
EOF
made_run_sshd=
[ -d /run/sshd ] || { mkdir -p /run/sshd && made_run_sshd=1; }
/usr/sbin/sshd -D -e -f "$S/sshd_config" 2>"$S/log" & PIDS+=($!); disown $!
check "plain sshd is up" waitfor 10 port_open 12223
echo "[127.0.0.1]:12223 $(cut -d' ' -f1,2 "$S/host.pub")" >"$T/kh_sshd"
SSHD_OPTS=(-F /dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10
           -o IdentitiesOnly=yes -o UserKnownHostsFile="$T/kh_sshd" -i "$A/node.key" -p 12223)
expect_exit 0 "plain sshd accepts the owner-signed keymesh certificate" \
    timeout 30 ssh "${SSHD_OPTS[@]}" -o CertificateFile="$T/shell.cert" root@127.0.0.1 echo via-sshd
check "... and runs the command" contains "$T/out" "^via-sshd$"
check "... sshd logged the certificate" contains "$S/log" "Accepted publickey for root .*ED25519-CERT"
expect_exit 255 "plain sshd refuses a certificate signed by B's node key (not its CA)" \
    timeout 30 ssh "${SSHD_OPTS[@]}" -o CertificateFile="$T/exec.cert" root@127.0.0.1 echo no
[ -n "$made_run_sshd" ] && rmdir /run/sshd 2>/dev/null

stop_all() {
    for n in A B; do
        eval "DPID=\$P$n"; stop_daemon
        check "$n exits 0 after SIGTERM (got $DRC)" test "$DRC" -eq 0
    done
    for f in "$A.log" "$B.log"; do
        check "no sanitizer report in $(basename "$f")" sh -c "! grep -Eq '$SAN' '$f'"
        grep -E -A5 "$SAN" "$f" | head -20 | sed 's/^/    /'
    done
}
stop_all
finish
