#!/usr/bin/env bash
# mDNS/DNS-SD on a real link: two network namespaces joined by a veth pair (TEST-NET-1 and
# IPv6 link-local addresses only), km_mdns in each (tests/integration/mdns_driver.c until the
# daemon starts it): each finds the other, with IPv4 (lan) and IPv6 link-local paths, the
# mesh port from SRV, a verified signed announcement, and a goodbye when one stops. Then, if
# avahi-daemon and dbus-daemon are installed, a private avahi in one namespace must list the
# other's instance with avahi-browse. Everything is created here and deleted on every exit.
source "$(dirname "$0")/lib.sh"
DRV=${KM_MDNS_DRIVER:?set by CMake: path to mdns_driver}
[ "$(id -u)" = 0 ] || { echo "mdns: needs root for network namespaces"; exit 1; }
NA=km-md-$$-a
NB=km-md-$$-b
IA=kmmd$$a
IB=kmmd$$b
cleanup_ns() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$NA" 2>/dev/null
    ip netns del "$NB" 2>/dev/null
    cleanup
}
trap cleanup_ns EXIT
ip netns add "$NA" && ip netns add "$NB" || exit 1
ip link add "$IA" type veth peer name "$IB" || exit 1
ip link set "$IA" netns "$NA" && ip link set "$IB" netns "$NB" || exit 1
setup() { # NS IFACE IPV4
    ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.accept_dad=0"
    ip -n "$1" link set lo up
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$1" link set "$2" up
}
setup "$NA" "$IA" 192.0.2.1
setup "$NB" "$IB" 192.0.2.2
waitfor 5 sh -c "ip -n $NA -6 addr show dev $IA scope link | grep -q fe80"
waitfor 5 sh -c "ip -n $NB -6 addr show dev $IB scope link | grep -q fe80"

# A announces for 4 s with a signed announcement; B browses for 6 s, so it sees A's goodbye.
ip netns exec "$NA" "$DRV" 4 15001 --announce "$IA" >"$T/a.out" 2>"$T/a.err" &
PA=$!
PIDS+=("$PA")
ip netns exec "$NB" "$DRV" 6 15002 "$IB" >"$T/b.out" 2>"$T/b.err" &
PB=$!
PIDS+=("$PB")
wait "$PA"; RA=$?
wait "$PB"; RB=$?
ID_A=$(awk '/^self/ {print $2}' "$T/a.out")
ID_B=$(awk '/^self/ {print $2}' "$T/b.out")
sed 's/^/    a: /' "$T/a.out" "$T/a.err"
sed 's/^/    b: /' "$T/b.out" "$T/b.err"
check "driver A exits cleanly (every handle closed)" test "$RA" = 0
check "driver B exits cleanly" test "$RB" = 0
check "B finds A over IPv4 at A's mesh port (lan)" \
    grep -q "^found $ID_A 192.0.2.1 15001 lan ttl=120" "$T/b.out"
check "B finds A over IPv6 link-local (link-local)" \
    grep -qE "^found $ID_A fe80:[0-9a-f:]+ 15001 link-local ttl=120" "$T/b.out"
check "B verified A's signed announcement from the TXT" \
    grep -q "^found $ID_A .* ann=ok" "$T/b.out"
check "A finds B (no announcement)" grep -q "^found $ID_B 192.0.2.2 15002 lan .* ann=none" "$T/a.out"
check "B sees A's goodbye" grep -q "^found $ID_A - 0 goodbye ttl=0" "$T/b.out"
check "nobody reports itself" \
    sh -c "! grep -q '^found $ID_A' $T/a.out && ! grep -q '^found $ID_B' $T/b.out"
check "no malformed datagrams" sh -c "grep -q 'invalid=0' $T/a.out && grep -q 'invalid=0' $T/b.out"

# avahi-browse in B against our instance in A: a private system bus and avahi-daemon in B's
# namespace, with a private /run/avahi-daemon (mount namespace), so nothing on the host is
# touched.
if command -v avahi-daemon >/dev/null && command -v dbus-daemon >/dev/null &&
    command -v avahi-browse >/dev/null && command -v unshare >/dev/null; then
    cat >"$T/bus.conf" <<BUS
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$T/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
BUS
    cat >"$T/avahi.conf" <<AVAHI
[server]
host-name=km-md-$$-avahi
use-ipv4=yes
use-ipv6=yes
allow-interfaces=$IB
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-addresses=no
publish-hinfo=no
publish-workstation=no
[reflector]
[rlimits]
AVAHI
    ip netns exec "$NB" dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile \
        >"$T/dbus.log" 2>&1 &
    PIDS+=($!)
    waitfor 5 test -S "$T/bus"
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$T/bus"
    ip netns exec "$NB" unshare -m sh -c \
        "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f '$T/avahi.conf'" \
        >"$T/avahi.log" 2>&1 &
    PIDS+=($!)
    if waitfor 10 sh -c "grep -q 'Server startup complete' '$T/avahi.log'"; then
        # The real daemon this time, announcing on A's link.
        AD=$T/ad
        "$KM" init --dir "$AD" >/dev/null
        printf '[mesh]\nlisten = 192.0.2.1:15001\n[socks5]\nenabled = false\n[http]\nenabled = false\n[dns]\nenabled = false\n[mdns]\ninterfaces = %s\n' "$IA" >"$AD/keymesh.conf"
        ip netns exec "$NA" "$KM" up --dir "$AD" >"$AD.log" 2>&1 &
        PA=$!
        PIDS+=("$PA")
        ID_A2=$("$KM" id --dir "$AD" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
        sleep 3
        ip netns exec "$NB" timeout 10 avahi-browse -rpt _keymesh._tcp >"$T/browse.out" 2>&1
        kill -TERM "$PA"
        wait "$PA"
        RD=$?
        sed 's/^/    avahi-browse: /' "$T/browse.out"
        check "avahi-browse lists the daemon's instance" \
            grep -q "^+;$IB;IPv[46];$ID_A2;_keymesh._tcp;local" "$T/browse.out"
        check "... resolved: host, address, port and TXT with its key" \
            grep -qE "^=;$IB;IPv4;$ID_A2;_keymesh._tcp;local;$ID_A2.local;192.0.2.1;15001;.*\"k=.*\"v=keymesh1\"" "$T/browse.out"
        check "the daemon exits 0 (got $RD)" test "$RD" = 0
    else
        sed 's/^/    avahi: /' "$T/avahi.log" | head -20
        bad "avahi-daemon did not start in the namespace"
    fi
else
    echo "# skip avahi-browse: avahi-daemon, dbus-daemon or unshare not installed"
fi
finish
