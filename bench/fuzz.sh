#!/usr/bin/env bash
# Fuzzing campaigns (issue #9 §5): runs each libFuzzer harness of fuzz/ for
# RUNS executions (10 million by default) or SECONDS_PER seconds, whichever
# comes first, one harness at a time and one libFuzzer process at a time,
# from its seeds (the committed corpus and ../shared/vectors, as fuzz/meson.build
# declares them) into a corpus kept in build-fuzz/fuzz-campaign/<harness>/
# (a later campaign goes on from it). Then prints a table: executions,
# time, executions per second, corpus (units and bytes), coverage (cov:, the
# edges libFuzzer saw) and features (ft:) from libFuzzer's final stats, and
# the findings (a crash, leak or UB report stops a harness: its input is
# kept as build-fuzz/fuzz-campaign/<harness>-crash-…, its log next to it).
#
#   bench/fuzz.sh                           # every harness, 10 M executions each
#   bench/fuzz.sh nvs efuse                 # some, in that order (names without fuzz-)
#   RUNS=1000000 bench/fuzz.sh              # fewer
#   SECONDS_PER=3600 bench/fuzz.sh nvs      # at most an hour each
#   FRESH=1 bench/fuzz.sh                   # forget the kept corpora first
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

BUILD=${BUILD:-build-fuzz}
RUNS=${RUNS:-10000000}
SECONDS_PER=${SECONDS_PER:-0}
out=$BUILD/fuzz-campaign

if [ ! -f "$BUILD/build.ninja" ]; then
        CC=clang meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
                -Dtests=disabled >/dev/null || exit 1
fi
ninja -C "$BUILD" fuzz >/dev/null || { ninja -C "$BUILD" fuzz; exit 1; }
[ "${FRESH:-0}" = 1 ] && rm -rf "$out"
mkdir -p "$out"

mapfile -t harnesses < <(meson introspect --tests "$BUILD" | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["name"].startswith("fuzz-replay-"):
        print("\t".join([t["name"][len("fuzz-replay-"):]] + t["cmd"]))
')
# Harnesses named on the command line run in that order.
if [ $# -gt 0 ]; then
        chosen=()
        for w in "$@"; do
                found=
                for h in "${harnesses[@]}"; do
                        name=${h%%$'\t'*}
                        [ "$w" = "$name" ] || [ "$w" = "fuzz-$name" ] && found=$h
                done
                [ -n "$found" ] || { echo "bench/fuzz.sh: no harness called $w" >&2; exit 1; }
                chosen+=("$found")
        done
        harnesses=("${chosen[@]}")
fi

export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}
echo "machine: $(nproc) cores, $(uname -srm); clang $(clang -dumpversion); RUNS=$RUNS SECONDS_PER=$SECONDS_PER" >&2
rows=()
status=0
for h in "${harnesses[@]}"; do
        IFS=$'\t' read -r -a fields <<<"$h"
        name=${fields[0]}
        exe=${fields[1]}
        flags=()
        seeds=()
        for a in "${fields[@]:2}"; do
                case $a in
                -runs=*) ;;
                -*) flags+=("$a") ;;
                *) seeds+=("$a") ;;
                esac
        done
        mkdir -p "$out/$name"
        log=$out/$name.log
        echo "fuzz-$name: $exe ${flags[*]} -seed=1 -runs=$RUNS -max_total_time=$SECONDS_PER $out/$name ${seeds[*]}" >&2
        t0=$(date +%s)
        "$exe" "${flags[@]}" -seed=1 -runs="$RUNS" -max_total_time="$SECONDS_PER" -timeout=30 \
                -rss_limit_mb=8192 -print_final_stats=1 -artifact_prefix="$out/$name-" \
                "$out/$name" "${seeds[@]}" >"$log" 2>&1
        rc=$?
        t1=$(date +%s)
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
        cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
        ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
        corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[A-Za-z]*).*/\1/p' <<<"$done_line")
        secs=$((t1 - t0))
        if [ $rc -eq 0 ] && [ -n "$done_line" ]; then
                finding="0 crashes/leaks/UB"
        else
                finding="FINDING (exit $rc): $(grep -m1 -oE 'ERROR: [A-Za-z]+: [a-z -]+|fuzz check failed: .{0,60}|runtime error: .{0,60}' "$log")"
                status=1
        fi
        rows+=("$(printf '| fuzz-%s | %s | %s s | %s | %s | %s | %s | %s |' "$name" "${execs:-?}" "$secs" \
                "$([ -n "$execs" ] && [ $secs -gt 0 ] && echo $((execs / secs)) || echo '?')" "${corp:-?}" "${cov:-?}" \
                "${ft:-?}" "$finding")")
        echo "${rows[-1]}" >&2
done

echo "| harness | executions | time | exec/s | corpus (units/bytes) | cov | ft | findings |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
exit $status
