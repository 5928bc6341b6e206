#!/usr/bin/env bash
# NVS benchmark (issue #4): set and get operations per second on a 24 KiB
# partition kept in an emulated flash file (writes, bitmap updates and
# garbage collection included), plain and XTS-encrypted, and the time to
# open a full 24 KiB partition. There is no baseline to compare with: these
# are this machine's numbers, printed as measured.
#
#   bench/nvs.sh                  # SECONDS_PER=2
#   SECONDS_PER=5 bench/nvs.sh
#   BUILD=build-x bench/nvs.sh    # another build dir
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

N=${SECONDS_PER:-2}
BUILD=${BUILD:-build}
BENCH=$BUILD/bench/bench-nvs

if [ ! -x "$BENCH" ]; then
        [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
        # bench/meson.build picks bench-nvs.c up at configure time
        ninja -C "$BUILD" bench/bench-nvs >/dev/null 2>&1 ||
                { meson setup --reconfigure "$BUILD" >/dev/null && ninja -C "$BUILD" bench/bench-nvs >/dev/null; }
fi

echo "machine: $(nproc) cores, $(uname -srm), build type $(meson introspect --buildoptions "$BUILD" 2>/dev/null | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))' 2>/dev/null || echo unknown)" >&2
echo "command: $BENCH $N" >&2
exec "$BENCH" "$N"
