# The NAT topology of tests/integration/nat.sh, punch.sh and bench/nat.sh, built in network
# namespaces with documentation-range addresses only. Sourced; needs ip and nft, and root.
#
#   "public" segment 192.0.2.0/24 (bridge br0 in $PUB; the gateway node at 192.0.2.1)
#     |- R1 wan 192.0.2.11 : nftables masquerade;  LAN 198.51.100.0/24, node A 198.51.100.2
#     '- R2 wan 192.0.2.12 : nftables masquerade;  LAN 203.0.113.0/24,  node B 203.0.113.2
#
# nat_topo_up PREFIX FIREWALL: create the namespaces $PUB $R1 $R2 $NA $NB (names start with
#   PREFIX; all in $NAT_ALLNS) and their links. FIREWALL "drop-syn" makes both routers drop
#   unsolicited TCP SYNs from the WAN, as firewalled home routers do (a hole punch needs that:
#   a router that answers them with a reset closes the mapping the punch opened); "open"
#   leaves the kernel to answer them with resets.
# nat_topo_down: kill the processes in the caller's PIDS array (they run in the namespaces),
#   then delete every namespace nat_topo_up made (idempotent).
# nat_delay ROUTER MS: put MS of one-way delay (each direction) between ROUTER's WAN and the
#   public bridge: a namespace with tests/integration/delay_link.py forwarding between two
#   veths (this kernel has no netem; needs ethtool). Its PID joins PIDS, its namespace
#   NAT_ALLNS.
# nat_rules ROUTER MASQ: (re)load ROUTER's ruleset with MASQ on the way out ("masquerade", or
#   "masquerade random" for a symmetric NAT), keeping the firewall choice. Both rulesets have
#   the empty chains miniupnpd (nftables flavour) fills with its DNAT and filter rules.

NAT_ALLNS=
NAT_FIREWALL=open

nat_rules() {
    local input=
    [ "$NAT_FIREWALL" = drop-syn ] &&
        input='chain input { type filter hook input priority 0; policy accept; iifname "wan0" tcp flags & (syn | ack) == syn ct state new drop; }'
    ip netns exec "$1" nft -f - <<EON
flush ruleset
table inet filter {
  chain forward { type filter hook forward priority 0; policy drop; ct state established,related accept; iifname "lan0" accept; jump miniupnpd; }
  chain miniupnpd { }
  $input
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; oifname "wan0" $2; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
EON
}

# nat_router ROUTER-NS WAN-ADDR LAN-NET NODE-NS NODE-ADDR
nat_router() {
    local r=$1 wan=$2 net=$3 node=$4 naddr=$5 pubif=p${1: -2}
    ip link add wan0 netns "$r" type veth peer name "$pubif" netns "$PUB" || return 1
    ip -n "$PUB" link set "$pubif" master br0 && ip -n "$PUB" link set "$pubif" up || return 1
    ip -n "$r" addr add "$wan/24" dev wan0 && ip -n "$r" link set wan0 up || return 1
    ip link add lan0 netns "$r" type veth peer name eth0 netns "$node" || return 1
    ip -n "$r" addr add "$net.1/24" dev lan0 && ip -n "$r" link set lan0 up || return 1
    ip -n "$node" addr add "$naddr/24" dev eth0 && ip -n "$node" link set eth0 up || return 1
    ip -n "$node" route add default via "$net.1" || return 1
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1 || return 1
    nat_rules "$r" masquerade
}

nat_delay() {
    local r=$1 ms=$2 d=$1-dl pubif=p${1: -2} wan
    wan=$(ip -n "$r" -4 -o addr show dev wan0 | awk '{print $4}')
    [ -n "$wan" ] || return 1
    ip netns add "$d" || return 1
    NAT_ALLNS="$NAT_ALLNS $d"
    ip netns exec "$d" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1 || return 1
    ip -n "$PUB" link del "$pubif" || return 1 # and wan0, its peer
    ip link add wan0 netns "$r" type veth peer name in0 netns "$d" || return 1
    ip link add out0 netns "$d" type veth peer name "$pubif" netns "$PUB" || return 1
    ip -n "$PUB" link set "$pubif" master br0 && ip -n "$PUB" link set "$pubif" up || return 1
    ip -n "$d" link set in0 up && ip -n "$d" link set out0 up || return 1
    ip -n "$r" addr add "$wan" dev wan0 && ip -n "$r" link set wan0 up || return 1
    # Frames leave for the forwarder with their checksums done: a veth would hand it TCP
    # segments whose checksum (offloaded) is still to be filled in.
    ip netns exec "$r" ethtool -K wan0 tx off >/dev/null || return 1
    ip netns exec "$PUB" ethtool -K "$pubif" tx off >/dev/null || return 1
    ip netns exec "$d" python3 "$(dirname "${BASH_SOURCE[0]}")/delay_link.py" in0 out0 "$ms" &
    PIDS+=($!)
}

nat_topo_up() {
    PUB=$1-pub R1=$1-r1 R2=$1-r2 NA=$1-a NB=$1-b
    NAT_FIREWALL=$2
    local n
    for n in "$PUB" "$R1" "$R2" "$NA" "$NB"; do
        ip netns add "$n" || return 1
        NAT_ALLNS="$NAT_ALLNS $n"
        ip -n "$n" link set lo up || return 1
    done
    # A set MAC: a bridge otherwise takes its lowest port's, so nat_delay's new port could
    # change it under the routers' neighbour caches (G unreachable until they expire).
    ip -n "$PUB" link add br0 address 02:00:5e:00:02:01 type bridge &&
        ip -n "$PUB" link set br0 up || return 1
    ip -n "$PUB" addr add 192.0.2.1/24 dev br0 || return 1
    nat_router "$R1" 192.0.2.11 198.51.100 "$NA" 198.51.100.2 || return 1
    nat_router "$R2" 192.0.2.12 203.0.113 "$NB" 203.0.113.2
}

nat_topo_down() {
    local p n
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for n in $NAT_ALLNS; do ip netns del "$n" 2>/dev/null; done
    NAT_ALLNS=
}
