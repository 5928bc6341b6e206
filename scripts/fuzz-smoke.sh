#!/usr/bin/env bash
# The fuzzing smoke test (issue #9 §5): builds the libFuzzer harnesses of
# fuzz/ with clang in build-fuzz (ASan + UBSan + LSan), replays every seed
# corpus once (meson test --suite fuzz: the committed corpus with the crash
# inputs of fixed findings, and ../shared/vectors), then gives each harness a
# short run from its seeds: FUZZ_RUNS executions, cut at FUZZ_SECONDS, with a
# fixed -seed and a fresh scratch corpus, one libFuzzer process at a time.
# Any crash, leak, UB report, timeout or failed check fails the harness; the
# finding is kept as build-fuzz/fuzz-smoke/<harness>-crash-… with its log.
# Ends with one line "fuzz-smoke: N passed, M failed" (replays and runs).
#
#   scripts/fuzz-smoke.sh                  # every harness
#   scripts/fuzz-smoke.sh nvs config       # some of them (names without fuzz-)
#   FUZZ_RUNS=100000 FUZZ_SECONDS=60 scripts/fuzz-smoke.sh
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps || { echo "fuzz-smoke: 0 passed, 1 failed"; exit 1; }

BUILD=${BUILD:-build-fuzz}
RUNS=${FUZZ_RUNS:-20000}
MAX_SECONDS=${FUZZ_SECONDS:-12}
out=$BUILD/fuzz-smoke
passed=0
failed=0

if [ ! -f "$BUILD/build.ninja" ]; then
        CC=clang meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
                -Dtests=disabled >/dev/null || { echo "fuzz-smoke: 0 passed, 1 failed"; exit 1; }
fi
ninja -C "$BUILD" fuzz || { echo "fuzz-smoke: 0 passed, 1 failed"; exit 1; }
mkdir -p "$out"

# Each harness and its seeds and options, as fuzz/meson.build declares them
# for its fuzz-replay-<name> test: "name<TAB>executable<TAB>args…".
mapfile -t harnesses < <(meson introspect --tests "$BUILD" | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["name"].startswith("fuzz-replay-"):
        print("\t".join([t["name"][len("fuzz-replay-"):]] + t["cmd"]))
')
if [ ${#harnesses[@]} -eq 0 ]; then
        echo "fuzz-smoke: no harness in $BUILD (configured without -Dfuzz=true?)" >&2
        echo "fuzz-smoke: 0 passed, 1 failed"
        exit 1
fi
wanted() { # wanted NAME [WANTED…]: no WANTED means every harness
        local w
        [ $# -eq 1 ] && return 0
        for w in "${@:2}"; do
                [ "$w" = "$1" ] || [ "$w" = "fuzz-$1" ] && return 0
        done
        return 1
}

# The replays: meson test keeps their logs in meson-logs/testlog.txt.
suites=()
for h in "${harnesses[@]}"; do
        name=${h%%$'\t'*}
        wanted "$name" "$@" || continue
        suites+=("fuzz-replay-$name")
done
if [ ${#suites[@]} -eq 0 ]; then
        echo "fuzz-smoke: no harness called $*" >&2
        echo "fuzz-smoke: 0 passed, 1 failed"
        exit 1
fi
meson test -C "$BUILD" --no-rebuild --print-errorlogs --num-processes 1 "${suites[@]}"
f=$BUILD/meson-logs/testlog.json
p=$(grep -c '"result": "OK"' "$f" || true)
q=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|SKIP|UNEXPECTEDPASS)"' "$f" || true)
passed=$((passed + p))
failed=$((failed + q))

export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}
start=$(date +%s)
for h in "${harnesses[@]}"; do
        IFS=$'\t' read -r -a fields <<<"$h"
        name=${fields[0]}
        exe=${fields[1]}
        wanted "$name" "$@" || continue
        flags=()
        seeds=()
        for a in "${fields[@]:2}"; do
                case $a in
                -runs=*) ;;
                -*) flags+=("$a") ;;
                *) seeds+=("$a") ;;
                esac
        done
        scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke-$name.XXXXXX")
        log=$out/$name.log
        t0=$(date +%s)
        # The first directory is libFuzzer's output corpus: a scratch one, so
        # the committed seeds stay as they are and each smoke starts alike.
        "$exe" "${flags[@]}" -seed=1 -runs="$RUNS" -max_total_time="$MAX_SECONDS" -timeout=10 \
                -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/$name-" \
                "$scratch" "${seeds[@]}" >"$log" 2>&1
        rc=$?
        t1=$(date +%s)
        rm -rf "$scratch"
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        cov=$(grep -oE '^#[0-9]+[[:space:]]+DONE[[:space:]]+cov: [0-9]+' "$log" | tail -n 1 | sed 's/.*cov: //')
        if [ $rc -eq 0 ] && [ -n "$execs" ]; then
                printf 'PASS fuzz-%-20s %8s executions in %3d s, cov %s\n' "$name" "$execs" $((t1 - t0)) "${cov:-?}"
                passed=$((passed + 1))
        else
                printf 'FAIL fuzz-%-20s exit %d after %d s; log %s:\n' "$name" $rc $((t1 - t0)) "$log"
                grep -E 'ERROR|SUMMARY|fuzz check failed|runtime error|Test unit written' "$log" | head -n 20 | sed 's/^/    /'
                failed=$((failed + 1))
        fi
done
echo "fuzz-smoke: runs took $(($(date +%s) - start)) s" >&2
echo "fuzz-smoke: $passed passed, $failed failed"
[ $failed -eq 0 ]
