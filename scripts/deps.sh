#!/usr/bin/env bash
# Install every Debian 12 package keymesh needs to build, test and benchmark.
# Idempotent: prints nothing and touches nothing when all packages are present.
#
# Usage: scripts/deps.sh [--arm64]
#   --arm64  also install the aarch64 cross toolchain, qemu-user and the arm64
#            multiarch -dev packages used by scripts/cross-arm64.sh.
set -euo pipefail

# Build and library dependencies (DESIGN.md section 2; docs/DEPENDENCIES.md says why each).
LIBS=(libuv1-dev libsodium-dev libinih-dev libjansson-dev libcmocka-dev libssh-dev libldns-dev
      liblwip-dev libminiupnpc-dev libnatpmp-dev)
BUILD=(build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format)
# Real peers and tools the tests run against.
TOOLS=(openssh-client openssh-server iputils-ping iperf3 valgrind curl iproute2 procps psmisc python3 file git knot-dnsutils bind9-dnsutils unbound knot avahi-daemon avahi-utils dbus
       nftables miniupnpd-nftables ethtool)

want=("${LIBS[@]}" "${BUILD[@]}" "${TOOLS[@]}")
if [[ "${1:-}" == --arm64 ]]; then
    want+=(gcc-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross)
    # libldns-dev is not co-installable across architectures (a shared doc file differs);
    # the headers are the same for both, so arm64 needs only the library (CMakeLists.txt).
    for p in "${LIBS[@]}"; do
        if [[ "$p" == libldns-dev ]]; then want+=(libldns3:arm64); else want+=("$p:arm64"); fi
    done
fi

missing=()
native=$(dpkg --print-architecture)
for p in "${want[@]}"; do
    # dpkg-query prints "install ok installed" only for fully installed packages. A name
    # without an architecture means the native one (with :arm64 installed too, a bare name
    # would match both and print two statuses).
    q=$p
    [[ "$q" == *:* ]] || q="$q:$native"
    st=$(dpkg-query -W -f='${Status}' "$q" 2>/dev/null || true)
    # Architecture "all" packages (the cross toolchain's) answer only to the bare name.
    [[ -n "$st" ]] || st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [[ "$st" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
    SUDO=sudo
else
    SUDO=
fi
echo "deps: installing ${missing[*]}" >&2
if [[ "${1:-}" == --arm64 ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    stamp=0
else
    # apt lists older than a day (or absent) are refreshed once.
    stamp=$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1 | wc -l)
fi
export DEBIAN_FRONTEND=noninteractive
[[ "$stamp" -eq 0 ]] && $SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
