#!/usr/bin/env bash
# Boot verification of a fleet that runs one image (issue #16 §5): boot_run()
# on M provisioned-like devices without and with a BootCache, in one run, for
# the provisioned firmware and for a 1 MiB image. See bench/bench-boot.c.
#
#   bench/boot.sh                 # M=2000
#   M=10000 bench/boot.sh
#   BUILD=build-x bench/boot.sh   # another build dir
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

M=${M:-2000}
BUILD=${BUILD:-build}
BENCH=$BUILD/bench/bench-boot

if [ ! -x "$BENCH" ]; then
        [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
        ninja -C "$BUILD" bench/bench-boot >/dev/null 2>&1 ||
                { meson setup --reconfigure "$BUILD" >/dev/null && ninja -C "$BUILD" bench/bench-boot >/dev/null; }
fi

echo "machine: $(nproc) cores, $(uname -srm)" >&2
for size in 0 1M; do
        echo "command: $BENCH $M $size" >&2
        "$BENCH" "$M" "$size"
done
