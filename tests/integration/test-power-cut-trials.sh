#!/usr/bin/env bash
# Power cuts and crashes (issue #9 §2): TRIALS times (4 here; bench/powercut.sh
# runs 1,000), a fleet of N devices is started, sent a fleet OTA (1 MiB
# images, and every third one raises SECURE_VERSION, an eFuse burn) and a burst
# of NVS writes (/esp/update/interval), and at a random moment the whole daemon
# is killed with SIGKILL (or, every other trial, one worker first and then the
# daemon). After each cut, with nothing running:
#   - every eFuse file is whole (1,024 bytes) and reads (`efuse summary`);
#   - every NVS partition opens and its settings read (`nvs get`): the one
#     write in flight may be lost, as on real flash, nothing else;
#   - every device's otadata selects a slot whose app reads (`device show`);
# and at the next start every device boots a valid app and comes online.
# POWERCUT_SUMMARY=FILE: a line of counts for bench/powercut.sh.
source "$(dirname "$0")/ota-lib.sh"
TRIALS=${TRIALS:-4}
N=${N:-8}
SEED=${SEED:-$RANDOM}
RANDOM=$SEED

ota_fleet "$N"
start_s_server "$T/pki" "$OTA_WWW"
write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 200.0; };' 'device = { boot_time_ms = 0; };' \
        'reconnect = { backoff_min_ms = 100; backoff_max_ms = 1000; };' \
        'ota = { confirm_timeout = 5; max_retries = 0; };'
mapfile -t devs < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)
for id in "${devs[@]}"; do "$ESPFLEET" nvs set "$T/fleet/devices/$id" secure_esp use_url u8 1 >/dev/null || fail "nvs set"; done

online_now() { "$ESPFLEET" status -c "$T/espfleetd.conf" --format json 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["online"])' 2>/dev/null || echo 0; }
all_online() { [ "$(online_now)" -ge "$N" ]; }

check_offline() {  # check_offline TRIAL
        local t=$1 id dev size
        for id in "${devs[@]}"; do
                dev=$T/fleet/devices/$id
                size=$(stat -c %s "$dev/efuse.bin")
                [ "$size" -eq 1024 ] || fail "trial $t: $id: efuse.bin is $size bytes (torn)"
                "$ESPFLEET" efuse summary "$dev" >/dev/null 2>"$T/check.err" || fail "trial $t: $id: eFuse: $(cat "$T/check.err")"
                "$ESPFLEET" nvs get "$dev" secure_esp url >/dev/null 2>"$T/check.err" \
                        || fail "trial $t: $id: NVS does not read: $(cat "$T/check.err")"
                "$ESPFLEET" nvs get "$dev" secure_esp interval >/dev/null 2>"$T/check.err" \
                        || grep -q ESP_ERR_NVS_NOT_FOUND "$T/check.err" \
                        || fail "trial $t: $id: NVS interval: $(cat "$T/check.err")"
                "$ESPFLEET" device show "$T/fleet" "$id" --format json >"$T/show.json" 2>"$T/check.err" \
                        || fail "trial $t: $id: device show: $(cat "$T/check.err")"
                python3 - "$T/show.json" <<'PY' || fail "trial $t: $id: no bootable app: $(cat "$T/show.json")"
import json, sys
f = json.load(open(sys.argv[1]))["firmware"]
assert f["boot_slot"] is not None and f["version"] and f["error"] is None, f
PY
        done
}

kills_daemon=0 kills_worker=0 ota_cut=0 started=$SECONDS
for t in $(seq 1 "$TRIALS"); do
        start_daemon "$T/espfleetd.conf"
        wait_for 60 all_online || fail "trial $t: only $(online_now)/$N devices online after a cut (a device that does not boot?)"
        v="1.$t.0" sv=$((t / 3))
        ota_image "fw-$t.bin" "$v" --secure-version "$sv" --size 1M
        mqtt_pub "$T/pki" /esp/update/url "https://localhost:$OTA_PORT/fw-$t.bin"
        mqtt_pub "$T/pki" /esp/update/run ""
        pubs=()
        for k in 1 2 3; do
                mqtt_pub "$T/pki" "/esp/${devs[$((RANDOM % N))]}/update/interval" $((300 + t * 3 + k)) &
                pubs+=("$!")
        done
        sleep "$(awk -v r=$RANDOM 'BEGIN {printf "%.3f", r % 1500 / 1000}')"
        if [ $((t % 2)) -eq 0 ]; then
                w=$(pgrep -P "$DAEMON_PID" -f 'espfleetd --worker' | head -n 1 || true)
                [ -n "$w" ] && kill -KILL "$w" && kills_worker=$((kills_worker + 1))
                sleep "$(awk -v r=$RANDOM 'BEGIN {printf "%.3f", r % 800 / 1000}')"
        fi
        # devices whose update of this trial had not finished when the power went
        done_t=$(count_lines "$T/espfleetd.log" "fw-$t.bin' done")
        ota_cut=$((ota_cut + N - done_t))
        kids=$(pgrep -P "$DAEMON_PID" | tr '\n' ' ' || true)
        kill -KILL "$DAEMON_PID" $kids 2>/dev/null || true
        kills_daemon=$((kills_daemon + 1))
        wait "$DAEMON_PID" 2>/dev/null || true
        for k in $kids; do timeout 10 tail --pid="$k" -f /dev/null || true; done
        for k in "${pubs[@]}"; do wait "$k" 2>/dev/null || true; done
        check_offline "$t"
        [ $((t % 50)) -ne 0 ] || log "trial $t/$TRIALS: every device consistent ($((SECONDS - started)) s)"
done
# the last cut too must boot
start_daemon "$T/espfleetd.conf"
wait_for 60 all_online || fail "after the last cut only $(online_now)/$N devices came online"
stop_daemon
summary="trials=$TRIALS devices=$N seed=$SEED daemon_kills=$kills_daemon worker_kills=$kills_worker cut_before_update_done=$ota_cut failures=0 seconds=$((SECONDS - started))"
[ -n "${POWERCUT_SUMMARY:-}" ] && echo "$summary" >"$POWERCUT_SUMMARY"
echo "ok: $summary"
