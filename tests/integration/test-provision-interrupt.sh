#!/bin/bash
# An interrupted `espfleet provision` (issue #16 item 4): kill -9 of the
# whole process group, then SIGINT, mid-run; each re-run of the same command
# keeps what was finished, shows no half-made device, and the last one
# completes exactly the missing devices: no duplicate index, id or MAC, no
# .tmp dir, no unlisted device dir, and every device loads.
set -euo pipefail
: "${ESPFLEET:?ESPFLEET must point at the espfleet binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/espfleet-intr.XXXXXX")
PID=
trap '[ -z "$PID" ] || kill -9 -- -"$PID" 2>/dev/null || true; rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }
N=4000
F=$T/fleet
listed() { if [ -f "$F/manifest.csv" ]; then tail -n +2 "$F/manifest.csv" | wc -l; else echo 0; fi; }

# start: the provisioning in a process group of its own (PID = its pgid).
start() {
        # (a background job of a script ignores SIGINT: undo that)
        env --default-signal=INT setsid "$ESPFLEET" provision "$F" --pki "$T/pki" --count $N --key-pool 2 --jobs 2 >"$T/run.out" 2>&1 &
        PID=$!
        local i
        for i in $(seq 50); do
                [ "$(ps -o pgid= -p "$PID" 2>/dev/null | tr -d ' ')" = "$PID" ] && return 0
                sleep 0.02
        done
        fail "provision is not in a process group of its own"
}

# wait_listed MIN: until manifest.csv lists MIN devices (the run must still be going).
wait_listed() {
        local i
        for i in $(seq 1200); do
                [ "$(listed)" -ge "$1" ] && return 0
                kill -0 "$PID" 2>/dev/null || { cat "$T/run.out"; fail "provision ended before $1 devices were listed"; }
                sleep 0.05
        done
        fail "manifest.csv did not reach $1 devices"
}

# gone: waits until no process of the group is left.
gone() {
        local i
        for i in $(seq 200); do
                kill -0 -- -"$PID" 2>/dev/null || { PID=; return 0; }
                sleep 0.05
        done
        fail "processes of group $PID are still running"
}

# check_visible: every device dir under its final name is complete, and
# every listed device has one.
check_visible() {
        local d
        for d in "$F"/devices/esp-??????; do
                [ -d "$d" ] || continue
                for f in efuse.bin flash.bin device.crt; do
                        [ -f "$d/$f" ] || fail "$d is visible but has no $f"
                done
                [ "$(stat -c %s "$d/efuse.bin")" = 1024 ] || fail "$d/efuse.bin is not 1024 bytes"
                [ -s "$d/device.crt" ] || fail "$d/device.crt is empty"
        done
        tail -n +2 "$F/manifest.csv" | cut -d, -f2 | while read -r id; do
                [ -d "$F/devices/$id" ] || fail "$id is listed but has no directory"
        done
}

"$ESPFLEET" pki init "$T/pki" >/dev/null

log "kill -9 of the process group mid-run"
start
wait_listed 200
kill -9 -- -"$PID"
wait "$PID" 2>/dev/null || true
gone
check_visible
tail -n +2 "$F/manifest.csv" | sort >"$T/listed.1"
(cd "$F/devices" && ls -d esp-?????? | sort) >"$T/visible.1"
log "after kill -9: $(wc -l <"$T/listed.1") listed, $(wc -l <"$T/visible.1") visible," \
    "$(find "$F/devices" -maxdepth 1 -name '*.tmp' | wc -l) half-made (.tmp)"
[ "$(wc -l <"$T/listed.1")" -lt $N ] || fail "the run finished before the kill; raise N"

log "SIGINT to the re-run"
start
wait_listed $(($(wc -l <"$T/listed.1") + 200))
kill -INT "$PID"
rc=0
wait "$PID" || rc=$?
[ "$rc" = 1 ] || { cat "$T/run.out"; fail "an interrupted provision exited with $rc, not 1"; }
grep -q "interrupted by SIGINT" "$T/run.out" || { cat "$T/run.out"; fail "no 'interrupted by SIGINT' message"; }
grep -q "run the same command again" "$T/run.out" || { cat "$T/run.out"; fail "the message does not say how to go on"; }
gone
check_visible
tail -n +2 "$F/manifest.csv" | sort >"$T/listed.2"
# a SIGINT stops in order: everything visible is listed
[ "$(wc -l <"$T/listed.2")" = "$(cd "$F/devices" && ls -d esp-?????? | wc -l)" ] || fail "SIGINT left unlisted device dirs"
comm -23 "$T/listed.1" "$T/listed.2" >"$T/lost"
[ ! -s "$T/lost" ] || { head "$T/lost"; fail "devices listed before the re-run were lost"; }
# the finished-but-unlisted devices of the killed run were adopted, not made again
cut -d, -f2 "$T/listed.2" | sort >"$T/ids.2"
comm -23 "$T/visible.1" "$T/ids.2" >"$T/orphans"
[ ! -s "$T/orphans" ] || { head "$T/orphans"; fail "device dirs of the killed run are not listed"; }

log "the last re-run completes"
"$ESPFLEET" provision "$F" --pki "$T/pki" --count $N --key-pool 2 --jobs 2 >"$T/run.out" 2>&1 \
        || { cat "$T/run.out"; fail "the last re-run failed"; }
made=$(sed -n 's/.*: \([0-9]*\) new devices.*/\1/p' "$T/run.out")
[ "$made" = $((N - $(wc -l <"$T/listed.2"))) ] || { cat "$T/run.out"; fail "the re-run made $made devices, not the missing ones"; }
tail -n +2 "$F/manifest.csv" >"$T/final"
[ "$(wc -l <"$T/final")" = $N ] || fail "the fleet does not list $N devices"
[ "$(cut -d, -f1 "$T/final" | tr '\n' ' ')" = "$(seq -s ' ' 0 $((N - 1))) " ] || fail "indexes are not 0..$((N - 1))"
[ "$(cut -d, -f2 "$T/final" | sort -u | wc -l)" = $N ] || fail "device ids are not distinct"
[ "$(cut -d, -f3 "$T/final" | sort -u | wc -l)" = $N ] || fail "MACs are not distinct"
comm -23 "$T/listed.2" <(sort "$T/final") >"$T/lost"
[ ! -s "$T/lost" ] || { head "$T/lost"; fail "devices listed before the last run changed"; }
[ -z "$(find "$F/devices" -maxdepth 1 -name '*.tmp')" ] || fail ".tmp dirs are left"
[ ! -e "$F/provision.pending" ] || fail "provision.pending is left"
[ "$(find "$F/devices" -mindepth 1 -maxdepth 1 | wc -l)" = $N ] || fail "devices/ holds other than the $N listed dirs"
check_visible

log "every device loads"
"$ESPFLEET" device list "$F" >"$T/list" || fail "device list failed"
[ "$(grep -c ' esp-' "$T/list")" = $N ] || fail "device list does not show $N devices"
for idx in 0 1 $((N / 2)) $((N - 1)); do
        id=$(awk -F, -v i=$idx '$1 == i { print $2 }' "$T/final")
        "$ESPFLEET" device show "$F" "$id" >"$T/show" || fail "device show $id failed"
        grep -q "private key only as DS ciphertext" "$T/show" || fail "device show $id: no DS key"
done
echo "ok: interrupted twice (kill -9, SIGINT), then $made devices completed $N, nothing lost or doubled"
