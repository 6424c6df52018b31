#!/usr/bin/env bash
# Style gate (STYLE.md section 4): clang-format conformance and the banned-function list.
# Exits non-zero with one line per finding.
set -uo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
fail=0
if ! clang-format --dry-run -Werror "${files[@]}" 2>/tmp/km-style.$$; then
    grep -E '^[^ ].*(warning|error):' /tmp/km-style.$$ | head -20
    echo "check-style: run 'clang-format -i' on the files above" >&2
    fail=1
fi
rm -f /tmp/km-style.$$
# Banned: unbounded or error-blind C library calls (curl's checksrc list, STYLE.md 4).
banned='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|strtok|strncpy|tmpnam|mktemp|alloca)[[:space:]]*\('
if grep -nE "$banned" "${files[@]}"; then
    echo "check-style: banned functions above (use snprintf, memcpy with a checked length, strtoul...)" >&2
    fail=1
fi
[ "$fail" -eq 0 ] && echo "check-style: ok (${#files[@]} files)"
exit "$fail"
