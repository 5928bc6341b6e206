#!/usr/bin/env bash
# Fleet benchmark (issue #2): against a local mosquitto with mTLS, measured in
# ONE run on this machine:
#   1. the broker's own mTLS handshake ceiling (baseline): `openssl s_time -new`
#      full handshakes per second with a client certificate, two clients in
#      parallel for DURATION seconds;
#   2. how long N devices take to come online (espfleetd, unthrottled ramp),
#      and the rate that makes, next to the baseline;
#   3. how many stay online over a HOLD period, and RSS per online device
#      (sum of espfleetd's processes).
#
#   bench/fleet.sh            # N=2000
#   N=6000 HOLD=60 bench/fleet.sh
# The fleet is provisioned once in $BENCH_DIR and reused by later runs.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. scripts/deps.sh
ensure_deps
ensure_build build >/dev/null

N=${N:-2000}
HOLD=${HOLD:-30}
DURATION=${DURATION:-10}
BENCH_DIR=${BENCH_DIR:-/var/tmp/espfleet-bench}
export ESPFLEET=$top/build/src/cli/espfleet ESPFLEETD=$top/build/src/sim/espfleetd
. tests/integration/lib.sh

PKI=$BENCH_DIR/pki
FLEET=$BENCH_DIR/fleet
mkdir -p "$BENCH_DIR"
[ -f "$PKI/$PKI_CA" ] || "$ESPFLEET" pki init "$PKI" >/dev/null
have=$( [ -f "$FLEET/manifest.csv" ] && tail -n +2 "$FLEET/manifest.csv" | wc -l || echo 0)
if [ "$have" -lt "$N" ]; then
        log "provisioning $((N - have)) more devices (RSA-2048 keygen ~190 ms each, on every core)"
        "$ESPFLEET" provision "$FLEET" --pki "$PKI" --count "$N" >/dev/null
fi

start_mosquitto "$PKI"

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

# 2. Time to online for N devices, offered at the broker's measured ceiling
# (RATE=… overrides): an unthrottled start only overflows the broker's
# accept backlog and costs SYN retransmits.
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
start_daemon "$T/bench.conf"
all_online() { [ "$(online)" -ge "$N" ]; }
wait_for 600 all_online || log "only $(online)/$N online after 600 s"
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b-a}')
rate=$(awk -v n="$N" -v s="$secs" 'BEGIN {printf "%.0f", n/s}')

# 3. Hold, then count and measure memory.
sleep "$HOLD"
kids=$(pgrep -P "$DAEMON_PID" | tr '\n' ' ')
rss_kb=0
for p in $DAEMON_PID $kids; do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        rss_kb=$((rss_kb + r))
done
summary=$(grep -E 'online' "$T/espfleetd.log" | tail -n 1)
still=$(online)
offline=$(grep -cE '"state":"offline"' "$T/status.out" || true)
per_dev=$(awk -v k="$rss_kb" -v n="$still" 'BEGIN {printf "%.1f", (n ? k/n : 0)}')

printf '\n| measure | value |\n|---|---|\n'
printf '| broker mTLS handshake ceiling (s_time -new, 2 clients) | %s/s |\n' "$base_rate"
printf '| %s devices online (ramp and connect cap %s/s) after | %s s (%s devices/s, %s%% of the ceiling) |\n' "$N" "$RATE" "$secs" "$rate" \
        "$(awk -v r="$rate" -v b="$base_rate" 'BEGIN {printf "%.0f", (b ? 100*r/b : 0)}')"
printf '| online after a %s s hold | %s of %s (offline messages: %s) |\n' "$HOLD" "$still" "$N" "$offline"
printf '| espfleetd RSS (all processes) | %s MiB, %s KiB per online device |\n' "$((rss_kb / 1024))" "$per_dev"
printf '| last daemon summary | %s |\n' "${summary##*: }"
stop_daemon
