#!/usr/bin/env bash
# DS benchmark (issue #3): DS signatures per second through ds_key_sign_raw()
# (HMAC + AES-256-CBC + MD/padding check + RSA private operation), next to
# `openssl speed rsa2048 rsa3072` (OpenSSL's own RSA sign rate), measured in
# ONE run on this machine, one core each, one after the other.
# Both rates are per second of user CPU time (openssl speed's default; bench-ds
# does the same), so other load on the machine does not skew the ratio; the
# DS wall-clock rate is shown too.
#
#   bench/ds.sh                 # SECONDS_PER=10
#   SECONDS_PER=3 bench/ds.sh   # quicker
#   BUILD=build-x bench/ds.sh   # another build dir
# Goal: ratio >= 0.90.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

N=${SECONDS_PER:-10}
BUILD=${BUILD:-build}
BENCH=$BUILD/bench/bench-ds

if [ ! -x "$BENCH" ]; then
        [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
        ninja -C "$BUILD" bench/bench-ds >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "espfleet DS benchmark: $N s per measurement, $(nproc) cores, $(openssl version)" >&2
echo "running: openssl speed -seconds $N rsa2048 rsa3072" >&2
openssl speed -seconds "$N" rsa2048 rsa3072 >"$tmp/openssl.txt" 2>"$tmp/openssl.err"
echo "running: $BENCH --seconds $N --bits 2048,3072" >&2
"$BENCH" --seconds "$N" --bits 2048,3072 >"$tmp/ds.txt"

# openssl speed's table: "rsa 2048 bits 0.000712s 0.000021s 1404.5 47846.8"
# (sign time, verify time, sign/s, verify/s).
openssl_rate() {
        awk -v b="$1" '$1 == "rsa" && $2 == b && $3 == "bits" { print $6 }' "$tmp/openssl.txt"
}
# bench-ds: "ds WHAT BITS OPS USER_S OPS/USER_S WALL_S OPS/WALL_S"
ds_rate() {
        awk -v b="$1" -v col="$2" '$1 == "ds" && $3 == b { print $col }' "$tmp/ds.txt"
}

printf '%-10s %16s %16s %8s %18s\n' "key" "openssl sign/s" "DS sign/s" "ratio" "(DS wall-clock/s)"
status=0
for bits in 2048 3072; do
        o=$(openssl_rate "$bits")
        d=$(ds_rate "$bits" 6)
        w=$(ds_rate "$bits" 8)
        if [ -z "$o" ] || [ -z "$d" ]; then
                echo "rsa$bits: missing measurement (openssl: '${o}', DS: '${d}')" >&2
                cat "$tmp/openssl.err" >&2
                status=1
                continue
        fi
        ratio=$(awk -v d="$d" -v o="$o" 'BEGIN { printf "%.2f", d / o }')
        printf '%-10s %16s %16s %8s %18s\n' "rsa$bits" "$o" "$d" "$ratio" "$w"
done
exit $status
