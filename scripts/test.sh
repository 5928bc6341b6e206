#!/usr/bin/env bash
# Runs every espfleet test: installs what is missing, builds, runs the unit
# and integration suites (meson test), then the unit suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then (full runs only) the
# fuzzing smoke (scripts/fuzz-smoke.sh: each libFuzzer harness replays its
# seeds and runs briefly; every replay and every run counts as one test).
# Ends with one line "tests: N passed, M failed".
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --suite unit    # extra args go to `meson test`
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps || exit 1

passed=0
failed=0
skipped=()
tally() { # tally BUILDDIR
        local f=$1/meson-logs/testlog.json
        [ -f "$f" ] || return 0
        local p q
        p=$(grep -c '"result": "OK"' "$f" || true)
        q=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$f" || true)
        passed=$((passed + p))
        failed=$((failed + q))
        # a skipped test is named and counted, never silent
        mapfile -t -O "${#skipped[@]}" skipped < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") == "SKIP":
        print(t["name"])' "$f")
}

rc=0
ensure_build build || { echo "tests: 0 passed, 1 failed"; exit 1; }
meson test -C build --print-errorlogs --num-processes 2 "$@" || rc=1
tally build

if [ $# -eq 0 ] || [ "$*" = "--suite unit" ]; then
        ensure_build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug \
                || { echo "tests: $passed passed, $((failed + 1)) failed"; exit 1; }
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                meson test -C build-asan --suite unit --print-errorlogs --num-processes 2 || rc=1
        tally build-asan
fi

if [ $# -eq 0 ]; then
        # The smoke ends with "fuzz-smoke: P passed, F failed"; without that
        # line (say, it could not build) it counts as one failure.
        smoke_log=$(mktemp)
        scripts/fuzz-smoke.sh | tee "$smoke_log" || rc=1
        smoke=$(tail -n 1 "$smoke_log")
        rm -f "$smoke_log"
        if [[ $smoke =~ ^fuzz-smoke:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
                passed=$((passed + BASH_REMATCH[1]))
                failed=$((failed + BASH_REMATCH[2]))
        else
                failed=$((failed + 1))
                rc=1
        fi
fi

[ ${#skipped[@]} -eq 0 ] || echo "tests skipped: ${#skipped[@]} (${skipped[*]})"
echo "tests: $passed passed, $failed failed"
exit $rc
