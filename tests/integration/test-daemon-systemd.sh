#!/usr/bin/env bash
# The systemd side of espfleetd, without systemd: a notify socket stands in
# for PID 1. Checks READY=1 only after the initial ramp, STATUS= with
# online/total, WATCHDOG=1 pings at half of WATCHDOG_USEC, two worker
# processes sharing the fleet, a killed worker and a hung one restarted with
# their devices back online, SIGHUP re-reading the config (live keys applied, restart-only keys
# named), and a clean SIGTERM.
source "$(dirname "$0")/lib.sh"
N=6

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'

start_notify_listener "$T/notify.sock" "$T/notify.out"

write_conf "$T/espfleetd.conf" "$T/fleet" \
        'workers = 2;' \
        'worker_watchdog = 3;' \
        'ramp = { rate = 20.0; };' \
        'device = { boot_time_ms = 100; };' \
        'log = { summary_interval = 1; };'
NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=1000000 start_daemon "$T/espfleetd.conf"

# READY=1 comes once, after the ramp, and reports every device online
wait_count 60 "$T/notify.out" 'READY=1' 1 || fail "no READY=1"
grep -m1 'READY=1' "$T/notify.out" | grep -q "STATUS=$N/$N devices online" \
        || fail "READY=1 before the ramp was done: $(grep -m1 READY=1 "$T/notify.out")"
wait_count 20 "$T/status.out" '"state":"online"' "$N" || fail "not all devices online"
wait_count 10 "$T/espfleetd.log" 'Worker [01] started' 2 || fail "expected two worker processes"

# the watchdog is pinged at half of WATCHDOG_USEC
before=$(count_lines "$T/notify.out" 'WATCHDOG=1')
sleep 2.2
after=$(count_lines "$T/notify.out" 'WATCHDOG=1')
[ $((after - before)) -ge 3 ] || fail "watchdog pinged $((after - before)) times in 2.2 s at WatchdogSec=1s"
grep -q 'STATUS=.*devices online' "$T/notify.out" || fail "no STATUS= line"

# a crashed worker is restarted and its devices come back
wpid=$(grep -oE 'Worker 1 started \(pid [0-9]+\)' "$T/espfleetd.log" | head -n1 | grep -oE '[0-9]+\)$' | tr -d ')')
[ -n "$wpid" ] || fail "no pid for worker 1"
: >"$T/status.out.after"
cp "$T/status.out" "$T/status.before"
kill -KILL "$wpid"
wait_count 20 "$T/espfleetd.log" "Worker 1 .*(signal|exited).*restarting" 1 || fail "worker death not reported"
wait_count 30 "$T/espfleetd.log" 'Worker 1 started' 2 || fail "worker 1 was not restarted"
online_again() { [ "$(grep -c "Fleet: online $N/$N" "$T/espfleetd.log")" -gt "$1" ]; }
seen=$(grep -c "Fleet: online $N/$N" "$T/espfleetd.log")
sleep 1
wait_for 60 online_again "$seen" || fail "fleet did not come back to $N/$N after the worker restart"
kill -0 "$DAEMON_PID" || fail "espfleetd died with its worker"

# a hung worker (SIGSTOP: its loop no longer runs) stops reporting; the
# supervisor kills it after worker_watchdog seconds and restarts it
hpid=$(grep -oE 'Worker 0 started \(pid [0-9]+\)' "$T/espfleetd.log" | tail -n1 | grep -oE '[0-9]+\)$' | tr -d ')')
[ -n "$hpid" ] || fail "no pid for worker 0"
kill -STOP "$hpid"
wait_count 20 "$T/espfleetd.log" "Worker 0 \(pid $hpid\) sent no report for 3 s: killing it" 1 || fail "hung worker not detected"
wait_count 30 "$T/espfleetd.log" 'Worker 0 started' 2 || fail "hung worker 0 was not restarted"
seen=$(grep -c "Fleet: online $N/$N" "$T/espfleetd.log")
sleep 1
wait_for 60 online_again "$seen" || fail "fleet did not come back to $N/$N after the hung worker was replaced"

# SIGHUP: a live key is applied, a restart-only key is named and ignored
sed -i 's/summary_interval = 1;/summary_interval = 2;/' "$T/espfleetd.conf"
sed -i "s/port = $MQTT_PORT;/port = $((MQTT_PORT + 1));/" "$T/espfleetd.conf"
kill -HUP "$DAEMON_PID"
wait_count 10 "$T/notify.out" 'RELOADING=1' 1 || fail "no RELOADING=1 on SIGHUP"
wait_count 10 "$T/espfleetd.log" "broker.port' changed.*restart" 1 || fail "restart-only key not reported"
r=$(grep -c 'READY=1' "$T/notify.out")
[ "$r" -ge 2 ] || fail "no READY=1 after the reload"
# bad config on SIGHUP: reported with file:line, the daemon keeps running
echo 'bogus_key = 1;' >>"$T/espfleetd.conf"
kill -HUP "$DAEMON_PID"
wait_count 10 "$T/espfleetd.log" "espfleetd.conf:[0-9]+.*bogus_key" 1 || fail "bad config on reload not reported with file:line"
sleep 1
kill -0 "$DAEMON_PID" || fail "espfleetd died on a bad config reload"

# SIGTERM: STOPPING=1, devices say offline, exit status 0
kill -TERM "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "espfleetd exited with $rc on SIGTERM"
grep -q 'STOPPING=1' "$T/notify.out" || fail "no STOPPING=1"
wait_count 10 "$T/status.out" '"state":"offline"' "$N" || fail "devices did not go offline"
echo "ok: READY after ramp, watchdog, 2 workers, worker restart, SIGHUP, SIGTERM"
