#!/usr/bin/env bash
# Build keymesh and run the daemon in the foreground: the README's first command.
# Installs missing Debian packages, builds build/release, then `keymesh up` with any
# arguments given here (e.g. --dir /tmp/km --log-level debug). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build/release keymesh >/dev/null
echo "run: built build/release/core/daemon/keymesh; starting 'keymesh up $*'" >&2
exec build/release/core/daemon/keymesh up "$@"
