#!/usr/bin/env bash
# After the broker restarts, every device reconnects (backoff + jitter under
# the fleet-wide connection-rate cap).
source "$(dirname "$0")/lib.sh"
N=8

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };' \
        'reconnect = { backoff_min_ms = 200; backoff_max_ms = 2000; connect_rate_max = 20.0; };'
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/espfleetd.log" "Fleet: online $N/$N" 1 || fail "fleet did not come online"

port=$MQTT_PORT
stop_mosquitto
wait_count 20 "$T/espfleetd.log" "Fleet: online 0/$N" 1 || fail "daemon did not notice the broker going away"
grep -q "Connection to the broker lost" "$T/espfleetd.log" || fail "no per-device lost-connection line"
sleep 2
start_mosquitto "$T/pki" "$port"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'
n0=$(count_lines "$T/espfleetd.log" "Fleet: online $N/$N")
wait_count 60 "$T/espfleetd.log" "Fleet: online $N/$N" $((n0 + 1)) || fail "not every device came back"
wait_count 10 "$T/status.out" '"state":"online"' "$N" || fail "online statuses after broker restart"
echo "ok: all $N devices back after a broker restart"
