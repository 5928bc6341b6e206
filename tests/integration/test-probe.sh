#!/usr/bin/env bash
# probe.enabled: the daemon's own subscriber (with the operator's
# certificate) times a broadcast command to every device's next log line,
# a command to one device, and telemetry end to end; the numbers show in
# the report and as worker="probe" series on /metrics. A probe without its
# key refuses to start with a clear error.
source "$(dirname "$0")/lib.sh"
N=4

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
MPORT=$(free_port)
write_conf "$T/bad.conf" "$T/fleet" 'probe = { enabled = true; cert = "/nonexistent/probe.crt"; key = "/nonexistent/probe.key"; };'
if "$ESPFLEETD" -c "$T/bad.conf" >"$T/bad.log" 2>&1; then fail "a probe without its certificate started"; fi
grep -q "probe.cert '/nonexistent/probe.crt': No such file or directory" "$T/bad.log" \
        || { cat "$T/bad.log" >&2; fail "no clear error for a missing probe certificate"; }

write_conf "$T/espfleetd.conf" "$T/fleet" \
        'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };' \
        'telemetry = { enabled = true; interval = 1; };' \
        "metrics = { listen = \"127.0.0.1:$MPORT\"; };" \
        "probe = { enabled = true; cert = \"$T/pki/$PKI_OPERATOR_CERT\"; key = \"$T/pki/$PKI_OPERATOR_KEY\"; };"
mqtt_sub_bg "$T/pki" "$T/log.out" '/esp/+/log'
"$ESPFLEETD" -c "$T/espfleetd.conf" --report "$T/report.json" >>"$T/espfleetd.log" 2>&1 &
DAEMON_PID=$!
_PIDS+=("$DAEMON_PID")
wait_count 60 "$T/espfleetd.log" "Initial ramp done: $N/$N" 1 || fail "the fleet did not come online"
wait_count 30 "$T/espfleetd.log" "Probe: connected" 1 || fail "the probe did not connect"
sleep 1 # its subscriptions are in place

# a broadcast every device answers with a log line ("update/interval: saved …")
mqtt_pub "$T/pki" /esp/update/interval 3600
wait_count 30 "$T/log.out" 'update/interval: saved 3600' "$N" || fail "not every device answered the broadcast"
# one device, one command
id=$(tail -n +2 "$T/fleet/manifest.csv" | head -n 1 | cut -d, -f2)
mqtt_pub "$T/pki" "/esp/$id/update/interval" 7200
wait_count 30 "$T/log.out" "^/esp/$id/log .*update/interval: saved 7200" 1 || fail "$id did not answer"
sleep 3 # telemetry, and the probe's last samples

curl -sf "http://127.0.0.1:$MPORT/metrics" >"$T/metrics.txt" || fail "GET /metrics"
promtool check metrics <"$T/metrics.txt" >"$T/promtool.log" 2>&1 || { cat "$T/promtool.log" >&2; fail "promtool"; }
c=$(sed -nE 's/^espfleet_command_seconds_count\{worker="probe"\} ([0-9]+)$/\1/p' "$T/metrics.txt")
[ "$c" = "$((N + 1))" ] || fail "probe command latencies: '$c', expected $((N + 1))"
grep -qE '^espfleet_telemetry_seconds_count\{worker="probe"\} [1-9]' "$T/metrics.txt" || fail "no telemetry latency"
grep -q 'espfleet_devices{worker="probe"' "$T/metrics.txt" && fail "the probe has device gauges"

stop_daemon
python3 - "$T/report.json" "$N" <<'PY' || fail "the report's probe numbers are wrong"
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2])
h = r["histograms"]
assert h["command"]["count"] == n + 1, h["command"]
assert 0 < h["command"]["p50"] < 10, h["command"]
assert h["telemetry"]["count"] >= n, h["telemetry"]
assert 0 <= h["telemetry"]["min"] and h["telemetry"]["max"] < 10, h["telemetry"]
assert r["counters"]["probe_messages"] > 0, r["counters"]
PY
echo "ok: the probe timed $((N + 1)) commands and the telemetry"
