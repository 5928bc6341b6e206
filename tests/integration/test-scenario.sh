#!/usr/bin/env bash
# A load test as a file (--scenario): a steps ramp, churn, a reconnect storm
# at 5 s, telemetry at 2/s QoS 1 padded to 200 bytes, a hold, then a clean
# stop by itself with pass_if checked: exit 0 when the thresholds hold, 3
# (and a failed verdict in the report) when one does not. Then the same
# devices speak MQTT 5 (broker.protocol).
source "$(dirname "$0")/lib.sh"
N=10

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/telemetry.out" '/esp/+/telemetry'
write_conf "$T/espfleetd.conf" "$T/fleet" 'workers = 2;' 'device = { boot_time_ms = 100; };' \
        'reconnect = { backoff_min_ms = 200; backoff_max_ms = 1000; };'
cat >"$T/scenario.conf" <<'SC'
scenario = {
        ramp = { profile = "steps"; step_size = 5; step_interval = 1; };
        hold = 10;
        churn = { rate = 1.0; };
        storm = { at = 5; };
        pass_if = { online_min_percent = 80.0; connack_p99_max_ms = 10000; ota_failures_max = 0; };
};
telemetry = { enabled = true; rate = 2.0; qos = 1; payload_size = 200; };
SC
# run_scenario NAME [ARGS...] -> RC: the daemon runs the scenario to its end by itself
run_scenario() {
        local name=$1; shift
        local rc=0
        timeout 120 "$ESPFLEETD" -c "$T/espfleetd.conf" --scenario "$T/scenario.conf" --report "$T/$name.json" \
                "$@" >>"$T/$name.log" 2>&1 || rc=$?
        RC=$rc
}

run_scenario pass
[ "$RC" = 0 ] || { tail -n 30 "$T/pass.log" >&2; fail "the passing scenario exited with $RC"; }
grep -q 'Scenario: reconnect storm, every connection drops now (2 of 2 workers)' "$T/pass.log" || fail "no storm"
grep -q 'Scenario: held 10 s after the ramp, stopping' "$T/pass.log" || fail "the hold did not end the run"
grep -qE 'pass_if: online >= 80 %: [0-9.]+: passed' "$T/pass.log" || fail "no pass_if line"
grep -qE 'pass_if: OTA failures <= 0: 0: passed' "$T/pass.log" || fail "no OTA pass_if line"
grep -q "All workers stopped" "$T/pass.log" || fail "no clean stop"
python3 - "$T/pass.json" "$N" "$T/telemetry.out" <<'PY' || fail "the report does not show the scenario"
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2])
c = r["counters"]
assert r["run"]["reason"] == "hold", r["run"]
assert r["verdict"]["passed"] is True and len(r["verdict"]["checks"]) == 3, r["verdict"]
assert r["config"]["scenario.ramp.profile"] == "steps", r["config"]
# every device was dropped once by the storm (online then), and churn dropped some more
assert c["disconnects"].get("storm", 0) >= n * 0.8, c["disconnects"]
assert c["disconnects"].get("churn", 0) >= 3, c["disconnects"]
# everyone reconnected after the storm: at least 2 connects per device
assert c["connects"] >= 2 * n + c["disconnects"]["churn"] * 0.5, c
assert r["histograms"]["puback"]["count"] > n, r["histograms"]["puback"]
# the ramp came in steps of 5: the first second's online count
lines = [l.rstrip("\n").split(" ", 1)[1] for l in open(sys.argv[3]) if l.strip()]
assert lines, "no telemetry"
assert all(len(p) == 200 for p in lines), sorted(set(len(p) for p in lines))
assert all(json.loads(p)["pad"].startswith("x") for p in lines)
PY
# the broker saw everyone come back after the storm
[ "$(count_lines "$T/mosquitto.log" 'New client connected')" -ge $((2 * N)) ] || fail "devices did not reconnect after the storm"

# an impossible threshold: exit status 3, a failed verdict
sed -i 's/connack_p99_max_ms = 10000;/connack_p99_max_ms = 0.0001;/' "$T/scenario.conf"
run_scenario strict
[ "$RC" = 3 ] || { tail -n 30 "$T/strict.log" >&2; fail "a failed threshold exited with $RC, not 3"; }
grep -qE 'pass_if: CONNACK p99 <= 0.0001 ms: [0-9.]+: FAILED' "$T/strict.log" || fail "the failed check is not logged"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["verdict"]; assert v["passed"] is False, v' "$T/strict.json" \
        || fail "the report's verdict is not failed"

# MQTT 5: the broker sees protocol 5 from every device
echo 'broker = { protocol = "mqttv5"; };' >>"$T/scenario.conf"
sed -i 's/hold = 10;/hold = 2;/; s/storm = { at = 5; };//; s/connack_p99_max_ms = 0.0001;/connack_p99_max_ms = 10000;/' "$T/scenario.conf"
: >"$T/mosquitto.log"
run_scenario v5
[ "$RC" = 0 ] || { tail -n 30 "$T/v5.log" >&2; fail "the MQTT 5 run exited with $RC"; }
[ "$(count_lines "$T/mosquitto.log" 'New client connected from .* as esp-[0-9a-f]+ \(p5,')" -ge "$N" ] \
        || { tail -n 5 "$T/mosquitto.log" >&2; fail "the devices did not speak MQTT 5"; }
echo "ok: a scenario file runs to its end, storms, churns, and sets the exit status"
