#!/usr/bin/env bash
# The keymesh CLI against real files and the real ssh-keygen: init, id, derive, --help,
# usage errors, key adoption and refusal of unsafe or existing keys.
source "$(dirname "$0")/lib.sh"
D=$T/state

# --help everywhere, usage errors exit 2.
for c in init id derive up status peers resolve connect; do
    expect_exit 0 "$c --help" "$KM" "$c" --help
    check "$c --help prints usage" contains "$T/out" "Usage: keymesh $c"
done
expect_exit 0 "keymesh --help" "$KM" --help
expect_exit 0 "keymesh help id" "$KM" help id
check "help id shows id usage" contains "$T/out" "Usage: keymesh id"
expect_exit 0 "keymesh --version" "$KM" --version
expect_exit 2 "no command" "$KM"
expect_exit 2 "unknown command" "$KM" frobnicate
check "unknown command named" contains "$T/err" "unknown command 'frobnicate'"
expect_exit 2 "unknown long option" "$KM" id --bogus
check "unknown option named" contains "$T/err" "unknown option '--bogus'"
expect_exit 2 "unknown short option" "$KM" id -z
check "unknown short option named" contains "$T/err" "unknown option '-z'"
expect_exit 2 "missing option value" "$KM" derive --suffix
check "missing value named" contains "$T/err" "option '--suffix' needs a value"
expect_exit 2 "stray argument" "$KM" id extra
expect_exit 2 "bad log level" "$KM" up --dir "$D" --log-level loud
check "bad log level named" contains "$T/err" "loud"
for bad in 0 600001 12x ""; do
    expect_exit 2 "status --timeout '$bad' refused" "$KM" status --dir "$D" --timeout "$bad"
    check "timeout error names the value" contains "$T/err" "--timeout '$bad': expected 1..600000 ms"
done
expect_exit 2 "resolve --timeout refused" "$KM" resolve --dir "$D" --timeout -5 x

# id before init: a clear error, no key created.
expect_exit 1 "id without a key" "$KM" id --dir "$D"
check "id explains how to create a key" contains "$T/err" "run 'keymesh init'"

# init creates a 0600 key that ssh-keygen reads; id agrees with it.
expect_exit 0 "init" "$KM" init --dir "$D" --json
check "init --json has node_id" contains "$T/out" '"node_id"'
check "key file is mode 0600" test "$(stat -c %a "$D/node.key")" = 600
check "state dir is mode 0700" test "$(stat -c %a "$D")" = 700
ssh-keygen -y -f "$D/node.key" > "$T/sshkeygen.pub" 2>"$T/err"
check "ssh-keygen -y reads the node key" test -s "$T/sshkeygen.pub"
"$KM" id --dir "$D" --public-key > "$T/id.pub"
check "ssh-keygen -y and keymesh id --public-key agree" \
    test "$(cut -d' ' -f1,2 "$T/sshkeygen.pub")" = "$(cat "$T/id.pub")"
check ".pub file agrees" test "$(cut -d' ' -f1,2 "$D/node.key.pub")" = "$(cat "$T/id.pub")"
"$KM" id --dir "$D" --json > "$T/id.json"
check "id --json public_key matches ssh-keygen" python3 -c '
import json,sys; j=json.load(open(sys.argv[1])); k=open(sys.argv[2]).read().split()
assert j["public_key"] == k[0]+" "+k[1]
assert set(["node_id","fqdn","vip","public_key","key_file"]) <= set(j)
assert j["fqdn"] == j["node_id"] + ".mesh.internal" and len(j["node_id"]) == 52
assert j["vip"].startswith("fd6b:")' "$T/id.json" "$T/sshkeygen.pub"
# derive of the .pub file and of the node ID give the same identity as id.
NODE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["node_id"])' "$T/id.json")
"$KM" derive --json "$D/node.key.pub" > "$T/d1.json"
"$KM" derive --json "$NODE" > "$T/d2.json"
"$KM" derive --json "$D/node.key" > "$T/d3.json"
check "derive .pub == derive node ID == derive private key file" python3 -c '
import json,sys; a,b,c,i=[json.load(open(f)) for f in sys.argv[1:5]]
assert a == b == c and all(a[k] == i[k] for k in ("node_id","fqdn","vip","public_key"))' \
    "$T/d1.json" "$T/d2.json" "$T/d3.json" "$T/id.json"
"$KM" id --dir "$D" --known-hosts > "$T/kh"
check "known_hosts line names the FQDN on the mesh port" contains "$T/kh" "^\[$NODE.mesh.internal\]:15022,\[fd6b:"

# Never overwrite a key without --force.
cp "$D/node.key" "$T/key.before"
expect_exit 1 "init refuses to replace a key" "$KM" init --dir "$D"
check "refusal names --force" contains "$T/err" "pass --force"
check "key unchanged after refusal" cmp -s "$D/node.key" "$T/key.before"
expect_exit 0 "init --force replaces the key" "$KM" init --dir "$D" --force
check "key changed after --force" test "$(cmp -s "$D/node.key" "$T/key.before"; echo $?)" = 1

# Refuse a key readable by others, with the file named.
chmod 0644 "$D/node.key"
expect_exit 1 "id refuses a world-readable key" "$KM" id --dir "$D"
check "refusal names the file and the reason" contains "$T/err" "node.key: key file permissions are too open"
chmod 0600 "$D/node.key"

# Adopt an existing OpenSSH ed25519 key.
ssh-keygen -q -t ed25519 -N '' -C adopted -f "$T/ossh" >/dev/null
D2=$T/adopt
expect_exit 0 "init --adopt an ssh-keygen key" "$KM" init --dir "$D2" --adopt "$T/ossh"
"$KM" derive --json "$T/ossh.pub" > "$T/a1.json"
"$KM" id --dir "$D2" --json > "$T/a2.json"
check "adopted key keeps its identity" python3 -c '
import json,sys; a,b=[json.load(open(f)) for f in sys.argv[1:3]]; assert a["node_id"]==b["node_id"]' \
    "$T/a1.json" "$T/a2.json"
ssh-keygen -q -t ed25519 -N 'secret' -f "$T/enc" >/dev/null
expect_exit 1 "adopt refuses an encrypted key" "$KM" init --dir "$T/enc-d" --adopt "$T/enc"
check "encrypted key reason" contains "$T/err" "encrypted"
ssh-keygen -q -t ecdsa -N '' -f "$T/ec" >/dev/null
expect_exit 1 "adopt refuses an ecdsa key" "$KM" init --dir "$T/ec-d" --adopt "$T/ec"
check "key type reason" contains "$T/err" "not ed25519"
head -c 200 "$T/ossh" > "$T/trunc"; chmod 600 "$T/trunc"
expect_exit 1 "adopt refuses a truncated key" "$KM" init --dir "$T/tr-d" --adopt "$T/trunc"
check "corrupt key reason" contains "$T/err" "corrupt"
check "nothing created for a refused adoption" test ! -e "$T/tr-d/node.key"

# derive: the DESIGN.md test vectors, every input form, and bad input.
V1=d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
N1=25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena
P1=fd6b:21fe:31df:a154:a261:626b:f854:46f
V2=3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c
N2=hvabpq7iioevvevxbktu2g36xsojqlgpf3cjndgazvk7ckxumyga
P2=fd6b:39f7:13d0:a644:253f:452:9421:b9f5
expect_exit 0 "derive vector 1 from hex" "$KM" derive --json $V1
check "vector 1" python3 -c '
import json,sys; j=json.load(open(sys.argv[1]))
assert j["node_id"]==sys.argv[2] and j["vip"]==sys.argv[3] and j["fqdn"]==sys.argv[2]+".mesh.internal"' \
    "$T/out" $N1 $P1
expect_exit 0 "derive vector 2 from upper-case node ID" "$KM" derive --json "${N2^^}"
check "vector 2" python3 -c '
import json,sys; j=json.load(open(sys.argv[1])); assert j["node_id"]==sys.argv[2] and j["vip"]==sys.argv[3]' \
    "$T/out" $N2 $P2
expect_exit 0 "derive from FQDN with trailing dot" "$KM" derive "$N1.MESH.internal."
check "FQDN form" contains "$T/out" "$P1"
expect_exit 0 "derive with --suffix and --prefix" "$KM" derive --suffix m.example.com --prefix fd00::/16 $N1
check "custom suffix" contains "$T/out" "$N1.m.example.com"
check "custom prefix" contains "$T/out" "fd00:21fe:31df"
expect_exit 2 "derive rejects 51 characters" "$KM" derive "${N1:0:51}"
expect_exit 2 "derive rejects a bad alphabet" "$KM" derive "${N1:0:51}1"
expect_exit 2 "derive rejects odd hex" "$KM" derive "${V1:0:63}"
expect_exit 2 "derive rejects a bad prefix" "$KM" derive --prefix fd6b::/48 $N1
expect_exit 2 "derive rejects a bad suffix" "$KM" derive --suffix 'a..b' $N1
expect_exit 1 "derive refuses an ecdsa .pub" "$KM" derive "$T/ec.pub"
expect_exit 2 "derive needs an argument" "$KM" derive

# A bad configuration file is reported as file:line and stops the command.
printf '[node]\nsuffix = mesh.internal\nbogus = 1\n' > "$T/bad.conf"
expect_exit 1 "bad config refused" "$KM" id --dir "$D" --config "$T/bad.conf"
check "config error names file:line" contains "$T/err" "$T/bad.conf:3:"
expect_exit 1 "missing explicit config refused" "$KM" id --dir "$D" --config "$T/none.conf"
check "missing config named" contains "$T/err" "none.conf"

finish
