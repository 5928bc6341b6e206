#!/usr/bin/env bash
# What the instruments cost (issue #8): the same N devices come online
# against one local mosquitto, in turn
#   off:    metrics.record = false, no metrics listener, no probe;
#   on:     histograms and counters recorded, /metrics scraped every second
#           (as Prometheus would, with curl), the JSON + HTML reports
#           written at the end;
#   probe:  on, plus the probe subscriber (every device's log lines then go
#           to one more client: its cost is mostly the broker's);
# ROUNDS times each, in one run, side by side. Measured per round: time
# until every device is online (the rate), and the CPU of all espfleetd
# processes from start to every device online, per device.
#
#   bench/instruments.sh                  # N=5000, 3 rounds
#   N=19500 ROUNDS=2 bench/instruments.sh
# The fleet is bench/fleet.sh's ($BENCH_DIR), provisioned with --key-pool if missing.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
N=${N:-5000}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-600}
. bench/bench-lib.sh
bench_setup "$N"
start_mosquitto "$PKI"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# run MODE -> "secs cpu_ms_per_device"
run() {
        local mode=$1 mport conf=$T/$1.conf extra=() scraper=""
        mport=$(free_port)
        if [ "$mode" = on ]; then
                extra=("metrics = { record = true; listen = \"127.0.0.1:$mport\"; };")
        elif [ "$mode" = probe ]; then
                extra=("metrics = { record = true; listen = \"127.0.0.1:$mport\"; };"
                       "probe = { enabled = true; cert = \"$PKI/$PKI_OPERATOR_CERT\"; key = \"$PKI/$PKI_OPERATOR_KEY\"; };")
        else
                extra=("metrics = { record = false; };")
        fi
        write_conf "$conf" "$FLEET" "device_count = $N;" \
                "ramp = { rate = $RATE.0; jitter = 0.0; };" "reconnect = { connect_rate_max = $RATE.0; };" \
                "device = { boot_time_ms = 0; };" "log = { summary_interval = 0; };" "${extra[@]}"
        : >"$T/$mode.log"
        local t0 t1 args=()
        [ "$mode" = off ] || args=(--report "$T/report.json" --report-html "$T/report.html")
        t0=$(date +%s.%N)
        "$ESPFLEETD" -c "$conf" "${args[@]}" >>"$T/$mode.log" 2>&1 &
        local pid=$!
        _PIDS+=("$pid")
        if [ "$mode" != off ]; then
                (while kill -0 "$pid" 2>/dev/null; do
                        curl -sf -o /dev/null "http://127.0.0.1:$mport/metrics" || true
                        sleep 1
                done) &
                scraper=$!
        fi
        wait_count 1200 "$T/$mode.log" "Initial ramp done" 1 || fail "$mode: the fleet did not come online"
        t1=$(date +%s.%N)
        local cpu=0 p
        for p in $pid $(pgrep -P "$pid" | tr '\n' ' '); do cpu=$((cpu + $(cpu_ticks "$p"))); done
        grep -q "Initial ramp done: $N/$N" "$T/$mode.log" || log "$mode: not all online at the end of the ramp"
        kill -TERM "$pid"
        timeout 60 tail --pid="$pid" -f /dev/null || true
        [ -z "$scraper" ] || wait "$scraper" 2>/dev/null || true
        awk -v a="$t0" -v b="$t1" -v c="$cpu" -v hz="$hz" -v n="$N" \
                'BEGIN {printf "%.1f %.3f\n", b - a, c * 1000 / hz / n}'
}

declare -A secs cpu
for r in $(seq 1 "$ROUNDS"); do
        for mode in off on probe; do
                log "round $r: instruments $mode, $N devices at $RATE/s"
                read -r s c < <(run "$mode")
                secs[$mode]="${secs[$mode]:-} $s"
                cpu[$mode]="${cpu[$mode]:-} $c"
        done
done
[ -s "$T/report.json" ] || fail "the instrumented runs wrote no report"
med() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f %%", 100 * (b - a) / a}'; }
s0=$(med "${secs[off]}"); c0=$(med "${cpu[off]}")
printf '\n| %s devices at %s/s, median of %s rounds (each round) | time until all online | CPU per device, start to online |\n|---|---|---|\n' \
        "$N" "$RATE" "$ROUNDS"
for mode in off on probe; do
        s=$(med "${secs[$mode]}"); c=$(med "${cpu[$mode]}")
        cost=""
        [ "$mode" = off ] || cost=" ($(pct "$s0" "$s"))"
        ccost=""
        [ "$mode" = off ] || ccost=" ($(pct "$c0" "$c"))"
        printf '| instruments %s | %s s%s (%s) | %s ms%s (%s) |\n' "$mode" "$s" "$cost" "${secs[$mode]# }" "$c" "$ccost" "${cpu[$mode]# }"
done
