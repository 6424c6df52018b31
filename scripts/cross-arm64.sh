#!/usr/bin/env bash
# Cross-build keymesh for arm64 (Raspberry Pi, 64-bit OS) and run its unit tests and fuzz
# corpus replays under qemu-aarch64. Installs the cross toolchain and :arm64 -dev packages
# first (scripts/deps.sh --arm64). The binary is build/arm64/core/daemon/keymesh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${KM_BUILD_ROOT:-build}
scripts/deps.sh --arm64
t0=$(date +%s)
cmake -S . -B "$ROOT/arm64" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
    -DCMAKE_BUILD_TYPE=MinSizeRel -DKM_WERROR=ON >/dev/null
ninja -C "$ROOT/arm64" >/dev/null
file "$ROOT/arm64/core/daemon/keymesh" | grep -q 'ARM aarch64' || {
    echo "cross-arm64: keymesh is not an aarch64 binary" >&2; exit 1; }
aarch64-linux-gnu-strip -o "$ROOT/arm64/keymesh.stripped" "$ROOT/arm64/core/daemon/keymesh"
echo "cross-arm64: keymesh $(stat -c %s "$ROOT/arm64/keymesh.stripped") bytes stripped (aarch64)"
# The integration tests need the host's tools around the binary; unit and fuzz replays run
# entirely in the emulator.
(cd "$ROOT/arm64" && ctest -L 'unit|fuzz' -LE forks -j"$(nproc)" --output-on-failure --timeout 300) | tail -n 5
echo "cross-arm64: done in $(( $(date +%s) - t0 ))s"
