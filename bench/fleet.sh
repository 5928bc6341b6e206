#!/usr/bin/env bash
# Fleet benchmark (issues #2, #16): against one local mosquitto with mTLS,
# measured in ONE run on this machine, side by side:
#   1. the broker's own mTLS handshake ceiling (baseline): `openssl s_time
#      -new` full handshakes per second with a client certificate, two
#      clients in parallel for DURATION seconds;
#   2. espfleetd: N devices offered at that ceiling (ramp and fleet-wide
#      connect cap), time until all are online, the rate as a fraction of the
#      ceiling, connect timeouts, worker restarts, client CPU and RSS per
#      device (all espfleetd processes), then a HOLD with every disconnect
#      counted, then one broadcast command (/esp/update/interval) timed from
#      the publish to each device's log line by bench/peer/probe.js;
#   3. the peer: MQTT.js (bench/peer/peer.js), one certificate per client,
#      the same N against the same broker at the same offered rate.
#
#   bench/fleet.sh                          # N=2000
#   N=19500 HOLD=600 bench/fleet.sh         # the issue #16 run
#   PEER=0 bench/fleet.sh                   # without the MQTT.js peer
# The fleet (provisioned with --key-pool, see README) and the peer's
# certificates are kept in $BENCH_DIR and reused by later runs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. scripts/deps.sh
ensure_deps
ensure_build build >/dev/null

N=${N:-2000}
HOLD=${HOLD:-30}
DURATION=${DURATION:-10}
PEER=${PEER:-1}
. bench/bench-lib.sh
bench_setup "$N"

start_mosquitto "$PKI"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

# 1. Baseline: the broker's full mTLS handshake rate.
log "baseline: openssl s_time -new against mosquitto for ${DURATION}s (2 clients)"
st_pids=()
for i in 1 2; do
        openssl s_time -connect "localhost:$MQTT_PORT" -new -time "$DURATION" \
                -CAfile "$PKI/$PKI_CA" -cert "$PKI/$PKI_OPERATOR_CERT" -key "$PKI/$PKI_OPERATOR_KEY" \
                >"$T/s_time.$i" 2>&1 &
        st_pids+=("$!")
done
wait "${st_pids[@]}"
# "3004 connections in 11 real seconds, …": each client's rate, summed
base_rate=$(awk '/connections in [0-9]+ real seconds/ { if ($4 > 0) r += $1 / $4 } END { printf "%.0f", r }' "$T"/s_time.*)

# 2. espfleetd, offered at the broker's measured ceiling (RATE=… overrides).
RATE=${RATE:-$base_rate}
mqtt_sub_bg "$PKI" "$T/status.out" '/esp/+/status'
: >"$T/status.out"
write_conf "$T/bench.conf" "$FLEET" \
        "device_count = $N;" \
        "ramp = { rate = $RATE.0; jitter = 0.0; };" \
        "reconnect = { connect_rate_max = $RATE.0; };" \
        "device = { boot_time_ms = 0; };" \
        "log = { summary_interval = 5; };"
online() { grep -E '"state":"online"' "$T/status.out" | cut -d' ' -f1 | sort -u | wc -l; }
t0=$(date +%s.%N)
broker0=$(cpu_ticks "$MQTT_PID")
start_daemon "$T/bench.conf"
all_online() { [ "$(online)" -ge "$N" ]; }
wait_for 1200 all_online || log "only $(online)/$N online after 1200 s"
t1=$(date +%s.%N)
broker_ms=$(awk -v a="$broker0" -v b="$(cpu_ticks "$MQTT_PID")" -v hz="$hz" -v n="$N" 'BEGIN {printf "%.2f", (b - a) * 1000 / hz / n}')
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b-a}')
rate=$(awk -v n="$N" -v s="$secs" 'BEGIN {printf "%.0f", n/s}')
procs="$DAEMON_PID $(pgrep -P "$DAEMON_PID" | tr '\n' ' ')"
cpu=0
for p in $procs; do cpu=$((cpu + $(cpu_ticks "$p"))); done
cpu_ms=$(awk -v c="$cpu" -v hz="$hz" -v n="$N" 'BEGIN {printf "%.2f", c * 1000 / hz / n}')
timeouts=$(count_lines "$T/espfleetd.log" 'timed out after')
restarts=$(count_lines "$T/espfleetd.log" 'Worker [0-9]+ \(pid [0-9]+\) (exited|died|sent no report)')
workers=$(grep -oE '[0-9]+ worker\(s\)' "$T/espfleetd.log" | head -n1 | cut -d' ' -f1)

# Hold: every device must stay; count what drops.
log "holding for ${HOLD}s"
lost0=$(count_lines "$T/espfleetd.log" 'Connection to the broker lost')
sleep "$HOLD"
lost=$(( $(count_lines "$T/espfleetd.log" 'Connection to the broker lost') - lost0 ))
offline=$(count_lines "$T/status.out" '"state":"offline"')
still=$(online)
rss_kb=0
for p in $procs; do rss_kb=$((rss_kb + $(rss_kib "$p"))); done
per_dev=$(awk -v k="$rss_kb" -v n="$N" 'BEGIN {printf "%.1f", k/n}')

# A broadcast command to all N: publish -> each device's log line.
log "broadcast command latency (probe.js)"
[ -d bench/peer/node_modules ] || (cd bench/peer && npm ci --silent --no-audit --no-fund >&2)
probe=$(node bench/peer/probe.js --pki "$PKI" --port "$MQTT_PORT" --n "$N" --ids '^esp-' --timeout 60 2>"$T/probe.err" || true)
[ -n "$probe" ] || probe="probe failed: $(tail -n 2 "$T/probe.err" | tr '\n' ' ')"
stop_daemon

# 3. The peer, same broker, same N, same offered rate.
peer="not run (PEER=0)"
if [ "$PEER" = 1 ]; then
        log "peer: MQTT.js, $N clients at $RATE/s"
        peer=$(bench/peer/run-peer.sh --pki "$PKI" --n "$N" --rate "$RATE" --hold 10 --host 127.0.0.1 \
                --port "$MQTT_PORT" --certs "$BENCH_DIR/peer-certs" 2>"$T/peer.err" || true)
        [ -n "$peer" ] || peer="peer failed: $(tail -n 2 "$T/peer.err" | tr '\n' ' ')"
fi
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

pct=$(awk -v r="$rate" -v b="$base_rate" 'BEGIN {printf "%.0f", (b ? 100*r/b : 0)}')
printf '\n| measure | espfleetd | MQTT.js peer | broker ceiling |\n|---|---|---|---|\n'
printf '| %s devices online after | %s s (%s/s, %s%% of the ceiling) | %s s (%s/s) | %s mTLS handshakes/s |\n' \
        "$N" "$secs" "$rate" "$pct" "$(field "$peer" secs)" "$(field "$peer" rate)" "$base_rate"
printf '| client CPU per device, start to online | %s ms | %s ms | |\n' "$cpu_ms" "$(field "$peer" cpu_ms_per_client)"
printf '| broker CPU per device while they come online | %s ms | | |\n' "$broker_ms"
printf '| RSS per online device (all processes) | %s KiB (%s MiB) | %s KiB | |\n' "$per_dev" "$((rss_kb / 1024))" \
        "$(field "$peer" rss_kib_per_client)"
printf '| connect timeouts / worker restarts | %s / %s (%s workers) | failures %s | |\n' "$timeouts" "$restarts" \
        "${workers:-?}" "$(field "$peer" failures)"
printf '| after a %s s hold | %s of %s online, %s lost connections, %s offline statuses | | |\n' "$HOLD" "$still" "$N" \
        "$lost" "$offline"
printf '| broadcast command, publish to log line | %s | | |\n' "$probe"
printf '| offered rate (ramp = connect cap) | %s/s | %s/s | |\n' "$RATE" "$RATE"
