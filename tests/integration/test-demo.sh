#!/usr/bin/env bash
# scripts/demo.sh as a user runs it, twice (issue #14):
#   - a first run provisions, comes online and updates every device;
#   - a re-run offers a version newer than the one the fleet now runs, and
#     counts only what this run's devices say (not statuses the broker kept);
#   - COUNT smaller than the fleet runs exactly COUNT devices;
#   - Ctrl-C (SIGINT to the whole process group) stops everything, writes the
#     reports and leaves no process and no "Killed" line behind.
source "$(dirname "$0")/lib.sh"
D=$T/demo
BUILD=$(cd "$(dirname "$ESPFLEETD")/../.." && pwd)

# run_demo COUNT OUT [ARGS]: until the fleet follows its log, then Ctrl-C
run_demo() {
        local count=$1 out=$2 pid; shift 2
        COUNT=$count ESPFLEET_DEMO_DIR=$D ESPFLEET_DEMO_BUILD=$BUILD setsid "$SOURCE_DIR/scripts/demo.sh" "$@" \
                >"$out" 2>&1 </dev/null &
        pid=$!
        _PIDS+=("$pid")
        wait_count 400 "$out" 'The fleet keeps running' 1 || fail "the demo did not get to the end: $(tail -n 20 "$out")"
        kill -INT -- "-$pid"
        timeout 60 tail --pid="$pid" -f /dev/null || fail "the demo did not stop on Ctrl-C"
        # (a zombie is gone already: its parent has only not reaped it yet; a
        # process still exiting gets a few seconds)
        demo_left() { ps -e -o pid=,pgid=,stat=,args= | awk -v g="$pid" '$2 == g && $3 !~ /^Z/'; }
        demo_gone() { [ -z "$(demo_left)" ]; }
        wait_for 15 demo_gone || fail "processes of the demo outlived it: $(demo_left)"
        grep -q 'Killed' "$out" && fail "the demo's Ctrl-C killed something: $(grep Killed "$out")"
        [ -s "$D/report.json" ] || fail "no report.json after Ctrl-C"
}

run_demo 3 "$T/run1.out"
grep -q 'Provisioning 3 devices' "$T/run1.out" || fail "run 1 did not provision 3 devices"
grep -q 'firmware 1.0.0 -> 1.1.0' "$T/run1.out" || fail "run 1 did not offer 1.1.0"
grep -q 'devices running 1.1.0: 3/3' "$T/run1.out" || fail "run 1: $(grep 'devices running' "$T/run1.out")"

# COUNT=2 on a fleet of 3: no provisioning, 2 devices, and a newer version
mv "$D/report.json" "$T/report1.json"
run_demo 2 "$T/run2.out"
grep -q 'Provisioning' "$T/run2.out" && fail "run 2 provisioned again"
grep -q 'holds 3 devices: running 2 of them' "$T/run2.out" || fail "run 2 does not say it runs 2 of 3"
grep -q 'firmware 1.1.0 -> 1.2.0' "$T/run2.out" || fail "run 2 did not offer a newer version: $(grep 'OTA:' "$T/run2.out")"
grep -q 'devices running 1.2.0: 2/2' "$T/run2.out" || fail "run 2: $(grep 'devices running' "$T/run2.out")"
python3 - "$D/report.json" <<'PY' || fail "run 2's report does not hold exactly 2 devices"
import json, sys
r = json.load(open(sys.argv[1]))
devs = r["devices"]
assert len(devs) == 2, len(devs)
PY

# --reset starts from nothing
run_demo 2 "$T/run3.out" --reset
grep -q -- '--reset: removing' "$T/run3.out" || fail "--reset did not say what it removes"
grep -q 'Provisioning 2 devices' "$T/run3.out" || fail "--reset did not provision a new fleet"
grep -q 'firmware 1.0.0 -> 1.1.0' "$T/run3.out" || fail "--reset: $(grep 'OTA:' "$T/run3.out")"
echo "ok: the demo re-runs honestly, runs exactly COUNT devices, resets, and stops on Ctrl-C"
