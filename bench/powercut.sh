#!/usr/bin/env bash
# Power-cut trials (issue #9 §2) at full length: tests/integration/
# test-power-cut-trials.sh with TRIALS=1000 (the test suite runs 4). Each
# trial starts the daemon, sends a fleet OTA (1 MiB, SECURE_VERSION raised
# every third time) and NVS writes, kills it with SIGKILL at a random moment
# (every other trial a worker first), then checks every device offline:
# eFuse whole, NVS readable, a bootable app; the next trial's start checks
# that every device boots and comes online. Any failure stops the run and
# names the trial, the device and what broke; SEED reproduces a run.
#
#   bench/powercut.sh                 # 1,000 trials, 8 devices
#   TRIALS=100 N=16 bench/powercut.sh
#   SEED=4242 bench/powercut.sh       # the same random cut points again
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" >/dev/null
export TRIALS=${TRIALS:-1000} N=${N:-8}
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
SOURCE_DIR=$top ESPFLEET=$top/$BUILD/src/cli/espfleet ESPFLEETD=$top/$BUILD/src/sim/espfleetd \
        POWERCUT_SUMMARY=$summary bash tests/integration/test-power-cut-trials.sh >&2
echo "machine: $(nproc) cores, $(uname -sr)"
echo "| trials | devices | daemon kills | worker kills | devices cut before their update was done | failures | time |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
eval "$(tr ' ' '\n' <"$summary" | sed 's/^/S_/')"
echo "| $S_trials | $S_devices | $S_daemon_kills | $S_worker_kills | $S_cut_before_update_done | $S_failures | ${S_seconds} s |"
echo "seed: $S_seed"
