#!/usr/bin/env bash
# Broker restarts at fleet scale (issue #9 §3): N devices online against one
# local mosquitto (mTLS); the broker is stopped, stays down for DOWN seconds,
# and comes back on the same port. Measured in one run:
#   - how many devices come back, and how long after the broker's return;
#   - the fleet-wide attempt rate the broker saw, per second, from its own
#     log ("New connection from …", one line per TCP connection it accepted),
#     against reconnect.connect_rate_max = RATE (each worker's token bucket
#     allows RATE/workers per second plus a burst of a tenth of that, so no
#     second may exceed 1.1 × RATE);
#   - connect timeouts and worker restarts in the daemon's log.
# Exits 1 if a device does not come back or a second exceeds 1.1 × RATE.
#
#   bench/broker-restart.sh                  # N=5000, down 10 s, RATE=200
#   DOWN=600 bench/broker-restart.sh         # the broker down for 10 minutes
#   N=1000 RATE=100 bench/broker-restart.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. scripts/deps.sh
ensure_deps
ensure_build build >/dev/null

N=${N:-5000}
DOWN=${DOWN:-10}
RATE=${RATE:-200}
. bench/bench-lib.sh
bench_setup "$N"

# epoch-second time stamps on every broker line, and the connection lines
MOSQUITTO_EXTRA_CONF="$MOSQUITTO_EXTRA_CONF
log_timestamp true
log_timestamp_format %s"
start_mosquitto "$PKI"
port=$MQTT_PORT
write_conf "$T/bench.conf" "$FLEET" \
        "device_count = $N;" \
        "ramp = { rate = $RATE.0; };" \
        "reconnect = { connect_rate_max = $RATE.0; backoff_min_ms = 1000; backoff_max_ms = 30000; };" \
        "device = { boot_time_ms = 0; };" \
        "log = { summary_interval = 1; };"
start_daemon "$T/bench.conf"
online_lines() { count_lines "$T/espfleetd.log" "Fleet: online $N/$N"; }
wait_count 1200 "$T/espfleetd.log" "Fleet: online $N/$N" 1 || fail "the fleet did not come online"
log "$N devices online; stopping the broker for ${DOWN}s"

stop_mosquitto
wait_count 120 "$T/espfleetd.log" "Fleet: online 0/$N" 1 || fail "the daemon did not see the broker go"
sleep "$DOWN"
mv "$T/mosquitto.log" "$T/mosquitto-before.log"
t_back=$(date +%s)
start_mosquitto "$PKI" "$port"
n0=$(online_lines)
t0=$(date +%s.%N)
back=yes
wait_count 1200 "$T/espfleetd.log" "Fleet: online $N/$N" $((n0 + 1)) || back=no
t1=$(date +%s.%N)
last=$(grep -oE "Fleet: online [0-9]+/$N" "$T/espfleetd.log" | tail -n 1 | grep -oE '[0-9]+' | head -n 1)
stop_daemon

# attempts per second the broker saw after its return
grep -E '^[0-9]+: New connection from' "$T/mosquitto.log" | cut -d: -f1 | sort | uniq -c | sort -k2 -n >"$T/per-second"
max_s=$(sort -k1 -n -r "$T/per-second" | head -n 1 | awk '{print $1}')
total=$(awk '{s += $1} END {print s + 0}' "$T/per-second")
limit=$(awk -v r="$RATE" 'BEGIN {printf "%.0f", 1.1 * r}')
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
timeouts=$(count_lines "$T/espfleetd.log" 'timed out after')
restarts=$(count_lines "$T/espfleetd.log" 'Worker [0-9]+ \(pid [0-9]+\) (exited|died|sent no report)')

echo "machine: $(nproc) cores, $(uname -sr); broker back at $(date -u -d "@$t_back" +%H:%M:%S) UTC"
echo "| devices | broker down | back online | time to all back | attempts at the broker | busiest second | limit (1.1 × connect_rate_max) | connect timeouts | worker restarts |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| $N | ${DOWN} s | ${last:-0}/$N | ${secs} s | $total | $max_s/s | $limit/s | $timeouts | $restarts |"
[ "$back" = yes ] || fail "only ${last:-0}/$N devices came back"
[ "${max_s:-0}" -le "$limit" ] || fail "a reconnect storm: $max_s attempts in one second, above $limit"
