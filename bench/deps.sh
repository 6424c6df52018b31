#!/usr/bin/env bash
# deps.sh -- Debian 12 packages the benchmarks in bench/ need (run once, as root).
#   nginx-light : static file server (sendfile; python's http.server is CPU-bound)
#   hyperfine   : connection-setup timing (mesh.sh)
#   openssh-*   : the baseline of mesh.sh (ssh -N -D against sshd)
#   yggdrasil, wireguard-go, wireguard-tools, iperf3 : the peers of tun.sh and nat.sh
#   nftables, miniupnpd-nftables : nat.sh's routers
set -eu
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
pkgs="nginx-light hyperfine curl openssh-server openssh-client iproute2 iputils-ping procps python3 cmake ninja-build
      yggdrasil wireguard-go wireguard-tools iperf3 nftables miniupnpd-nftables"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
[ -z "$missing" ] && { echo "all present: $pkgs"; exit 0; }
apt-get update
# --no-install-recommends and policy-rc.d: do not start the system nginx/sshd services
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.km-bench
prc_ours=0; [ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.km-bench /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; prc_ours=1; }
rm -f /usr/sbin/policy-rc.d.km-bench
trap '[ $prc_ours = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
