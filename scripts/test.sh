#!/usr/bin/env bash
# Build and run every test: the README's test command, and exactly what CI runs.
#
#   1. install missing Debian packages (scripts/deps.sh)
#   2. style gate: clang-format and banned functions (scripts/check-style.sh)
#   3. gcc release build, warnings as errors: unit, fuzz-corpus replay, integration (with the
#      unit tests and the daemon under valgrind)
#   4. clang build with ASan+UBSan, warnings as errors: the same tests under the sanitizers
#   5. libFuzzer smoke run of every fuzz target (KM_FUZZ_SECONDS each, default 5; 0 skips)
#   6. arm64 cross build with unit tests under qemu-aarch64 (KM_ARM64=0 skips)
#
# Ends with the failed tests and checks of every stage, if any (so a log's tail names them),
# then one line "N passed, M failed"; exits non-zero if anything failed.
# Build trees go to build/ (KM_BUILD_ROOT to change). Needs root for apt, or all packages.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=${KM_BUILD_ROOT:-build}
FUZZ_SECONDS=${KM_FUZZ_SECONDS:-5}
ARM64=${KM_ARM64:-1}
JOBS=$(nproc)
passed=0
failed=0
t_start=$(date +%s)
failures=()   # "<build dir>: <test or check>" of every failure, listed again at the end

stage() { printf '\n=== %s (%ss)\n' "$*" $(( $(date +%s) - t_start )); }
die() { echo "test: $*" >&2; echo "$passed passed, $((failed + 1)) failed"; exit 1; }

# run_ctest DIR LABEL: run ctest and add its counts to the totals.
run_ctest() {
    local dir=$1 out
    out=$(cd "$dir" && ctest -j"$JOBS" --output-on-failure --timeout 300 2>&1)
    local rc=$?
    # The failing checks of integration tests first (their full output can be long), then the
    # summary.
    echo "$out" | grep -E '^not ok' | head -n 40
    local t
    while IFS= read -r t; do failures+=("$dir: $t"); done < <(echo "$out" |
        grep -E '^[[:space:]]*[0-9]+ - .* \((Failed|Timeout|Not Run|SEGFAULT|Subprocess aborted)\)$|^not ok' |
        sed -E 's/^[[:space:]]+//' | head -n 20)
    echo "$out" | grep -vE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed|^ +Start +[0-9]+: ' | tail -n 40
    local line n_fail n_total
    line=$(echo "$out" | grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' | tail -n1)
    n_fail=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
    n_total=$(echo "$line" | sed -E 's/.* failed out of ([0-9]+).*/\1/')
    if [ -z "$line" ]; then failed=$((failed + 1)); return 1; fi
    passed=$((passed + n_total - n_fail)); failed=$((failed + n_fail))
    [ "$rc" -eq 0 ]
}

stage "dependencies"
if [ "$ARM64" = 1 ]; then scripts/deps.sh --arm64 || die "dependency install failed"
else scripts/deps.sh || die "dependency install failed"; fi

stage "style"
if scripts/check-style.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("style"); fi

stage "gcc release build (-Werror)"
cmake -S . -B "$ROOT/release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc \
    -DKM_WERROR=ON >/dev/null || die "configure (release) failed"
ninja -C "$ROOT/release" >/dev/null || { ninja -C "$ROOT/release" | tail -30; die "build (release) failed"; }
run_ctest "$ROOT/release"

stage "clang ASan+UBSan build (-Werror)"
cmake -S . -B "$ROOT/asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
    -DKM_WERROR=ON -DKM_SANITIZE='address;undefined' >/dev/null || die "configure (asan) failed"
ninja -C "$ROOT/asan" >/dev/null || { ninja -C "$ROOT/asan" | tail -30; die "build (asan) failed"; }
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest "$ROOT/asan"

if [ "$FUZZ_SECONDS" -gt 0 ]; then
    stage "libFuzzer smoke run (${FUZZ_SECONDS}s per target)"
    cmake -S . -B "$ROOT/fuzz" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
        -DKM_BUILD_TESTS=OFF -DKM_BUILD_FUZZERS=ON >/dev/null || die "configure (fuzz) failed"
    ninja -C "$ROOT/fuzz" >/dev/null || die "build (fuzz) failed"
    for f in "$ROOT"/fuzz/tests/fuzz/*-fuzzer; do
        name=$(basename "$f" -fuzzer)
        work=$(mktemp -d)
        if "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 "$work" \
            "tests/fuzz/corpus/$name" >"$work/log" 2>&1; then
            passed=$((passed + 1)); echo "fuzz $name: ok"
        else
            failed=$((failed + 1)); failures+=("fuzz $name"); echo "fuzz $name: FAILED"
            tail -40 "$work/log"
            cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* . 2>/dev/null
        fi
        rm -rf "$work"
    done
fi

if [ "$ARM64" = 1 ]; then
    stage "arm64 cross build, unit tests under qemu"
    if KM_BUILD_ROOT="$ROOT" scripts/cross-arm64.sh; then passed=$((passed + 1))
    else failed=$((failed + 1)); failures+=("arm64 cross build"); fi
fi

stage "done"
if [ "${#failures[@]}" -gt 0 ]; then
    echo "failed tests and checks:"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
