#!/usr/bin/env bash
# The supervisor parses the config once and hands each worker its effective
# config (issue #9 §4):
#   - a SIGHUP in the middle of the ramp sends no early READY=1 (systemd is
#     still waiting for the first one, which means "the ramp is done");
#   - a worker restarted after the file on disk was edited (no SIGHUP) runs
#     with the config the daemon started with, not with the edited file;
#   - a SIGHUP applies a live key to every worker and names a restart key
#     it ignores, once; the reload is confirmed with the keys it changed;
#   - a log file has time stamps;
#   - --check-config and the daemon refuse a missing fleet and a device_count
#     larger than the fleet.
source "$(dirname "$0")/lib.sh"
N=8

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'
start_notify_listener "$T/notify.sock" "$T/notify.out"

write_conf "$T/espfleetd.conf" "$T/fleet" 'workers = 2;' \
        'ramp = { rate = 2.0; jitter = 0.0; };' 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };'
NOTIFY_SOCKET=$T/notify.sock start_daemon "$T/espfleetd.conf"
wait_count 30 "$T/status.out" '"state":"online"' 2 || fail "the ramp did not start"
kill -HUP "$DAEMON_PID"
wait_count 10 "$T/espfleetd.log" 'Config reloaded' 1 || fail "the mid-ramp SIGHUP was not handled"
wait_count 60 "$T/notify.out" 'READY=1' 1 || fail "no READY=1"
grep -m1 'READY=1' "$T/notify.out" | grep -q "STATUS=$N/$N devices online" \
        || fail "READY=1 before the ramp was done: $(grep -m1 READY=1 "$T/notify.out")"
grep -q 'RELOADING=1' "$T/notify.out" && fail "RELOADING=1 before the daemon was ready"

# the file now points at a port nobody listens on; no SIGHUP
sed -i "s/port = $MQTT_PORT;/port = 1;/" "$T/espfleetd.conf"
grep -q 'port = 1;' "$T/espfleetd.conf" || fail "could not edit the config"
w=$(pgrep -P "$DAEMON_PID" -f 'espfleetd --worker 1:' || true)
[ -n "$w" ] || fail "no worker 1"
n0=$(count_lines "$T/status.out" '"state":"online"')
kill -KILL "$w"
wait_count 30 "$T/espfleetd.log" 'Worker 1 \(pid [0-9]+\) died from signal' 1 || fail "the kill was not noticed"
wait_count 60 "$T/status.out" '"state":"online"' $((n0 + N / 2)) \
        || fail "the restarted worker's devices did not come back (did it read the edited file?)"
grep -q "localhost:1 failed" "$T/espfleetd.log" && fail "a restarted worker used the edited file's port"

# SIGHUP: the restart key is named and ignored, the live key reaches the workers
sed -i 's/summary_interval = 1;/summary_interval = 1; level = "debug";/' "$T/espfleetd.conf"
kill -HUP "$DAEMON_PID"
wait_count 10 "$T/espfleetd.log" "Config key 'broker.port' changed: it takes effect after a daemon restart, ignoring" 1 \
        || fail "the changed restart key was not named"
wait_count 10 "$T/notify.out" 'RELOADING=1' 1 || fail "no RELOADING=1 once ready"
id=$(tail -n +2 "$T/fleet/manifest.csv" | tail -n 1 | cut -d, -f2)
mqtt_pub "$T/pki" "/esp/$id/update/interval" 4000
wait_count 10 "$T/espfleetd.log" "debug: $id: " 1 || fail "log.level = debug did not reach the workers"
# said once, by the supervisor, not once per worker too; and the reload is confirmed
[ "$(count_lines "$T/espfleetd.log" "Config key 'broker.port' changed")" -eq 1 ] \
        || fail "the restart-only warning was printed $(count_lines "$T/espfleetd.log" "Config key 'broker.port' changed") times"
grep -q "Config reloaded from $T/espfleetd.conf: 1 live key changed (log.level)" "$T/espfleetd.log" \
        || fail "the reload that changed log.level is not confirmed"
# a log that goes to a file has time stamps (journald and a terminal have their own)
grep -qE '^20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z espfleetd\[' "$T/espfleetd.log" \
        || fail "no time stamps in a log file: $(head -n 2 "$T/espfleetd.log")"
n=$(count_lines "$T/espfleetd.log" '^espfleetd\[')
[ "$n" -eq 0 ] || fail "$n lines without a time stamp: $(grep -m3 '^espfleetd\[' "$T/espfleetd.log")"
stop_daemon

# --check-config checks the fleet the config names, not only the syntax
"$ESPFLEETD" -c "$T/espfleetd.conf" --check-config >"$T/check.out" 2>&1 || fail "check-config: $(cat "$T/check.out")"
grep -q "OK ($N devices of $T/fleet)" "$T/check.out" || fail "check-config: $(cat "$T/check.out")"
write_conf "$T/nofleet.conf" "$T/no-such-fleet"
if "$ESPFLEETD" -c "$T/nofleet.conf" --check-config >"$T/check.out" 2>&1; then
        fail "check-config said OK for a fleet_dir that does not exist"
fi
grep -q "no-such-fleet" "$T/check.out" || fail "the missing fleet is not named: $(cat "$T/check.out")"
write_conf "$T/toomany.conf" "$T/fleet" 'device_count = 5000;'
if "$ESPFLEETD" -c "$T/toomany.conf" --check-config >"$T/check.out" 2>&1; then
        fail "check-config accepted device_count = 5000 on a fleet of $N"
fi
grep -q "device_count = 5000, but fleet '$T/fleet' holds only $N devices" "$T/check.out" \
        || fail "unclear device_count error: $(cat "$T/check.out")"
# the daemon refuses it the same way, and starts nothing
if timeout 20 "$ESPFLEETD" -c "$T/toomany.conf" >"$T/toomany.log" 2>&1; then
        fail "espfleetd ran with device_count = 5000 on a fleet of $N"
fi
grep -q "Refusing to start: device_count = 5000" "$T/toomany.log" || fail "$(cat "$T/toomany.log")"
echo "ok: one config, handed to every worker; no early READY"
