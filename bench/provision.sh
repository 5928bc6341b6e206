#!/usr/bin/env bash
# Provisioning benchmark (issue #16 item 4), measured in ONE run on this
# machine, one after the other, each on all cores (JOBS processes):
#   (a) raw RSA key generation: bench-rsagen, COUNT x EVP_RSA_gen() shared
#       by JOBS forked processes (the baseline);
#   (b) `espfleet provision --count COUNT` into a new fleet (a key per device);
#   (c) `espfleet provision --count POOL_COUNT --key-pool POOL` into a new fleet.
# Prints a markdown table: wall and CPU time (user + sys of the children),
# and (b)'s ratio to (a). Goals: (b)/(a) <= 1.10 (wall), (c) <= 60 s.
#
#   bench/provision.sh                          # COUNT=200 POOL_COUNT=20000 POOL=16
#   COUNT=400 POOL_COUNT=5000 POOL=4 bench/provision.sh
#   BUILD=build-x bench/provision.sh            # another build dir
# RSA key generation time varies a lot from key to key (the prime search), so
# a small COUNT gives a noisy ratio; the fleets live in a temporary directory
# under BENCH_DIR (default $TMPDIR or /tmp), removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

BUILD=${BUILD:-build}
COUNT=${COUNT:-200}
POOL=${POOL:-16}
POOL_COUNT=${POOL_COUNT:-20000}
JOBS=${JOBS:-$(nproc)}
ESPFLEET=$BUILD/src/cli/espfleet
RSAGEN=$BUILD/bench/bench-rsagen

[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" src/cli/espfleet bench/bench-rsagen >/dev/null

tmp=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/espfleet-bench-prov.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# timed OUT CMD...: runs CMD, writes "wall cpu" (seconds) to OUT.
timed() {
        local out=$1; shift
        /usr/bin/time -f "%e %U %S" -o "$out.raw" "$@"
        awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' "$out.raw" >"$out"
}
devices() { tail -n +2 "$1/manifest.csv" | wc -l; }

echo "espfleet provisioning benchmark: $JOBS jobs on $(nproc) cores, $(openssl version)" >&2
"$ESPFLEET" pki init "$tmp/pki" >/dev/null

echo "(a) $RSAGEN --jobs $JOBS $COUNT" >&2
read -r _ _ _ _ a_wall a_cpu < <("$RSAGEN" --jobs "$JOBS" "$COUNT")

echo "(b) espfleet provision FLEET --count $COUNT --jobs $JOBS" >&2
timed "$tmp/b" "$ESPFLEET" provision "$tmp/fleet-b" --pki "$tmp/pki" --count "$COUNT" --jobs "$JOBS" --quiet
read -r b_wall b_cpu <"$tmp/b"
[ "$(devices "$tmp/fleet-b")" -eq "$COUNT" ] || { echo "(b) did not make $COUNT devices" >&2; exit 1; }

echo "(c) espfleet provision FLEET --count $POOL_COUNT --key-pool $POOL --jobs $JOBS" >&2
timed "$tmp/c" "$ESPFLEET" provision "$tmp/fleet-c" --pki "$tmp/pki" --count "$POOL_COUNT" --key-pool "$POOL" \
        --jobs "$JOBS" --quiet
read -r c_wall c_cpu <"$tmp/c"
[ "$(devices "$tmp/fleet-c")" -eq "$POOL_COUNT" ] || { echo "(c) did not make $POOL_COUNT devices" >&2; exit 1; }

awk -v count="$COUNT" -v pool="$POOL" -v pcount="$POOL_COUNT" -v jobs="$JOBS" \
    -v aw="$a_wall" -v ac="$a_cpu" -v bw="$b_wall" -v bc="$b_cpu" -v cw="$c_wall" -v cc="$c_cpu" 'BEGIN {
        printf "| run | count | wall s | CPU s | ms/device (wall) | wall vs (a) | CPU vs (a) |\n"
        printf "|---|---:|---:|---:|---:|---:|---:|\n"
        printf "| (a) RSA-2048 keygen, %d processes | %d | %.2f | %.2f | %.1f | 1.00 | 1.00 |\n", jobs, count, aw, ac, aw * 1000 / count
        printf "| (b) provision, no pool | %d | %.2f | %.2f | %.1f | **%.3f** | %.3f |\n", count, bw, bc, bw * 1000 / count, bw / aw, bc / ac
        printf "| (c) provision --key-pool %d | %d | %.2f | %.2f | %.2f | | |\n", pool, pcount, cw, cc, cw * 1000 / pcount
        printf "\nGoals: (b) wall <= 1.10 x (a): %s; (c) <= 60 s: %s\n", bw <= 1.10 * aw ? "met" : "NOT met", cw <= 60 ? "met" : "NOT met"
}'
