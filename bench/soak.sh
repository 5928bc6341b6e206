#!/usr/bin/env bash
# The soak run (issue #9 §3b): the systemd operator's "survives for weeks",
# compressed into DURATION seconds (an hour by default) against one local
# mosquitto (mTLS) and one nginx (TLS), all on this machine:
#   - N devices online, each publishing a telemetry reading every TELEMETRY s
#     at QoS 1;
#   - churn: CHURN random online devices a second drop their connection and
#     reconnect after their backoff (scenario.churn.rate);
#   - a fleet OTA every OTA_EVERY s, the first at OTA_FIRST s: a newer signed
#     image (SIZE bytes) replaces fw.bin on nginx and one broadcast
#     /esp/update/run starts every device (spread over ota.start_jitter_ms);
#     each device downloads, verifies, reboots into it and confirms it.
# Measured:
#   - RSS and open fds of espfleetd (all its processes), sampled every
#     SAMPLE s; their growth is the mean of the last WINDOW s against the
#     mean of the WINDOW s that start once the first OTA has settled (every
#     device done, plus SETTLE s), so it compares one steady state after an
#     OTA with another;
#   - QoS 1 telemetry lost: an independent subscriber (mosquitto_sub, QoS 1,
#     persistent session) reads every reading; a reading's "seq" counts from
#     0 per boot, so a gap inside one boot is a reading lost (a repeat is
#     QoS 1's at-least-once and is counted apart);
#   - worker restarts, and each OTA's outcome (devices done, failed).
# Exits 1 when RSS or fds grew by 2 % or more, a reading was lost, a worker
# restarted or an OTA did not reach every device.
#
#   bench/soak.sh                                       # N=5000, an hour
#   N=100 DURATION=300 OTA_FIRST=30 OTA_EVERY=120 WINDOW=60 bench/soak.sh
# Everything is kept in $T (printed at the start): samples, logs, the
# telemetry the subscriber saw, the daemon's --report.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. scripts/deps.sh
ensure_deps
ensure_build build >/dev/null

N=${N:-5000}
DURATION=${DURATION:-3600}
TELEMETRY=${TELEMETRY:-10}
CHURN=${CHURN:-1}
OTA_FIRST=${OTA_FIRST:-300}
OTA_EVERY=${OTA_EVERY:-1200}
SIZE=${SIZE:-1048576}
SAMPLE=${SAMPLE:-10}
WINDOW=${WINDOW:-300}
SETTLE=${SETTLE:-60}
RATE=${RATE:-300}
JITTER_MS=${JITTER_MS:-30000}
export KEEP_TMP=1
. bench/bench-lib.sh
bench_setup "$N"
# the OTA helpers (nginx, images) in the same run directory
ESPFLEET_RUN_DIR=$T . tests/integration/ota-lib.sh
log "run directory: $T"

start_mosquitto "$PKI"

# The images: one per OTA, each a newer version than the one before.
n_ota=0
for ((t = OTA_FIRST; t < DURATION; t += OTA_EVERY)); do n_ota=$((n_ota + 1)); done
base=$(date +%s)
versions=()
for ((k = 1; k <= n_ota; k++)); do
        v=2.$((base + k))
        "$ESPFLEET" image build --version "$v" --size "$SIZE" -o "$OTA_WWW/fw-$k.bin" >/dev/null
        "$ESPFLEET" image sign --key "$PKI/secure_boot_signing_key.pem" "$OTA_WWW/fw-$k.bin" >/dev/null
        versions+=("$v")
done
nginx_port=$(free_port)
ota_nginx "$PKI" "$OTA_WWW" "$nginx_port"

# The subscriber that counts: QoS 1, a persistent session (-c), so the broker
# keeps its readings should it ever be slow to take them.
mosquitto_sub -h localhost -p "$MQTT_PORT" --cafile "$PKI/$PKI_CA" \
        --cert "$PKI/$PKI_OPERATOR_CERT" --key "$PKI/$PKI_OPERATOR_KEY" \
        -q 1 -c -i "espfleet-soak-$$" -v -t '/esp/+/telemetry' >"$T/telemetry.out" 2>"$T/mosquitto_sub.log" &
SUB_PID=$!
_PIDS+=("$SUB_PID")
sleep 0.5

write_conf "$T/soak.conf" "$FLEET" \
        "device_count = $N;" \
        "ramp = { rate = $RATE.0; };" \
        "reconnect = { connect_rate_max = $RATE.0; };" \
        "device = { boot_time_ms = 500; };" \
        "telemetry = { enabled = true; interval = $TELEMETRY; qos = 1; };" \
        "scenario = { churn = { rate = $CHURN.0; }; };" \
        "ota = { default_url = \"https://localhost:$nginx_port/fw.bin\"; confirm_timeout = 120; start_jitter_ms = $JITTER_MS; };" \
        "log = { summary_interval = $SAMPLE; };"
"$ESPFLEETD" -c "$T/soak.conf" --report "$T/soak.json" >>"$T/espfleetd.log" 2>&1 &
DAEMON_PID=$!
_PIDS+=("$DAEMON_PID")
wait_count 1200 "$T/espfleetd.log" "Initial ramp done" 1 || fail "the fleet did not come online"
mapfile -t ids < <(tail -n +2 "$FLEET/manifest.csv" | cut -d, -f2 | head -n "$N")
log "$N devices online; soaking for $DURATION s ($n_ota OTAs, churn $CHURN/s, telemetry every $TELEMETRY s at QoS 1)"

# "RSS_KiB FDS" of a process and its children
proc_usage() {
        local p r f rss=0 fds=0
        for p in "$1" $(pgrep -P "$1" || true); do
                r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
                f=$(ls "/proc/$p/fd" 2>/dev/null | wc -l || true)
                rss=$((rss + ${r:-0}))
                fds=$((fds + ${f:-0}))
        done
        echo "$rss $fds"
}
online_now() { grep -oE "Fleet: online [0-9]+/$N" "$T/espfleetd.log" | tail -n 1 | grep -oE '[0-9]+' | head -n 1 || true; }
ota_done() { count_lines "$T/espfleetd.log" ": OTA from '.*' done: version $1 "; }
# an OTA that failed, but not the refusal of a device asked again that had
# the version already (ESP-IDF's "same as a new" ESP_FAIL)
same_as_new="is the same as a new\. We will not continue the update"
ota_failed() { grep -E ": OTA from '.*' failed" "$T/espfleetd.log" | grep -cvE "$same_as_new" || true; }
ota_refused_same() { count_lines "$T/espfleetd.log" ": OTA from '.*' failed: .*$same_as_new"; }
# A device that churn had offline at the broadcast never saw it: as an
# operator would, ask each device that neither took the broadcast nor has
# reported the version again, on its own topic, once the broadcast's jitter
# is over, every 60 s.
ota_ask_again() { # version log-line-at-the-broadcast
        local id
        sed -nE "s/.*: ([^: ]+): OTA from '.*' done: version $1 .*/\1/p" "$T/espfleetd.log" >"$T/done.ids"
        tail -n +"$(($2 + 1))" "$T/espfleetd.log" |
                sed -nE 's/.*: ([^: ]+): Command update\/run (\(broadcast\) )?accepted.*/\1/p' >>"$T/done.ids"
        sort -u -o "$T/done.ids" "$T/done.ids"
        printf '%s\n' "${ids[@]}" | sort | comm -23 - "$T/done.ids" >"$T/missing.ids"
        while read -r id; do
                mqtt_pub "$PKI" "/esp/$id/update/run" ""
                asked=$((asked + 1))
        done <"$T/missing.ids"
}

# samples: t rss_kib fds mosquitto_rss_kib mosquitto_fds online readings
: >"$T/samples"
t_start=$SECONDS
k=0
next_ota=$OTA_FIRST
settled_at=
declare -A ota_started
asked=0
next_ask=
while :; do
        t=$((SECONDS - t_start))
        [ "$t" -lt "$DURATION" ] || break
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "espfleetd exited"
        if [ "$k" -lt "$n_ota" ] && [ "$t" -ge "$next_ota" ]; then
                k=$((k + 1))
                cp "$OTA_WWW/fw-$k.bin" "$OTA_WWW/fw.tmp"
                mv -f "$OTA_WWW/fw.tmp" "$OTA_WWW/fw.bin"
                ota_line=$(wc -l <"$T/espfleetd.log")
                mqtt_pub "$PKI" /esp/update/run ""
                ota_started[$k]=$t
                next_ask=$((t + JITTER_MS / 1000 + 90))
                log "t=${t}s: OTA $k/$n_ota to version ${versions[$((k - 1))]}"
                next_ota=$((next_ota + OTA_EVERY))
        fi
        if [ -n "$next_ask" ] && [ "$t" -ge "$next_ask" ]; then
                ota_ask_again "${versions[$((k - 1))]}" "$ota_line"
                next_ask=$((t + 60))
                [ -s "$T/missing.ids" ] || next_ask=
        fi
        if [ -z "$settled_at" ] && [ "$k" -ge 1 ] && [ "$(ota_done "${versions[0]}")" -ge "$N" ]; then
                settled_at=$((t + SETTLE))
                log "t=${t}s: the first OTA reached every device; the baseline window starts at ${settled_at}s"
        fi
        echo "$t $(proc_usage "$DAEMON_PID") $(proc_usage "$MQTT_PID") $(online_now) $(wc -l <"$T/telemetry.out")" >>"$T/samples"
        sleep "$SAMPLE"
done

restarts=$(count_lines "$T/espfleetd.log" 'Worker [0-9]+ \(pid [0-9]+\) (exited|died|sent no report)')
online_end=$(online_now)
stop_daemon
sleep 2
kill -TERM "$SUB_PID" 2>/dev/null || true

# Readings: per device, seq from 0 per boot; a gap inside a boot is a loss.
read -r readings lost repeats boots devices < <(
        sed -nE 's|^/esp/([^/]+)/telemetry .*"seq":([0-9]+).*|\1 \2|p' "$T/telemetry.out" | awk '
        {
                n++
                if (!($1 in last)) { dev++; boots++ }
                else if ($2 == 0) boots++
                else if ($2 <= last[$1]) { rep++; next }
                else if ($2 > last[$1] + 1) lost += $2 - last[$1] - 1
                last[$1] = $2
        }
        END { print n + 0, lost + 0, rep + 0, boots + 0, dev + 0 }')

# growth of the last WINDOW s against the WINDOW s from settled_at
growth() { # column
        awk -v c="$1" -v a="${settled_at:-0}" -v w="$WINDOW" -v d="$DURATION" '
                $1 >= a && $1 < a + w { bs += $c; bn++ }
                $1 >= d - w { es += $c; en++ }
                END {
                        if (!bn || !en) { print "? ? ?"; exit }
                        b = bs / bn; e = es / en
                        printf "%.0f %.0f %.2f\n", b, e, b ? 100 * (e - b) / b : 0
                }' "$T/samples"
}
read -r rss_b rss_e rss_g < <(growth 2)
read -r fd_b fd_e fd_g < <(growth 3)
read -r mrss_b mrss_e mrss_g < <(growth 4)
read -r mfd_b mfd_e mfd_g < <(growth 5)

echo
echo "\`N=$N DURATION=$DURATION bench/soak.sh\` ($(nproc) cores, $(uname -sr), $(mosquitto -h 2>/dev/null | head -n 1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' || true)); run directory $T"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| load | $N devices, telemetry every $TELEMETRY s at QoS 1, churn $CHURN/s, $n_ota fleet OTAs of $SIZE bytes every $OTA_EVERY s, for $DURATION s |"
for ((k = 1; k <= n_ota; k++)); do
        echo "| OTA $k (t=${ota_started[$k]:-?} s, version ${versions[$((k - 1))]}) | $(ota_done "${versions[$((k - 1))]}")/$N devices done |"
done
echo "| OTA failures (all OTAs) | $(ota_failed) |"
echo "| asked again while already running the version (refused: same version) | $(ota_refused_same) |"
echo "| devices asked again on their own topic (offline at a broadcast) | $asked |"
echo "| espfleetd RSS, after the first OTA -> the end | $((rss_b / 1024)) MiB -> $((rss_e / 1024)) MiB ($rss_g %) |"
echo "| espfleetd open fds, after the first OTA -> the end | $fd_b -> $fd_e ($fd_g %) |"
echo "| mosquitto RSS / fds, same windows | $((mrss_b / 1024)) -> $((mrss_e / 1024)) MiB ($mrss_g %) / $mfd_b -> $mfd_e ($mfd_g %) |"
echo "| QoS 1 readings received (devices, boots) | $readings ($devices, $boots) |"
echo "| readings lost (gaps in seq within a boot) | $lost |"
echo "| readings received twice (QoS 1 redelivery) | $repeats |"
echo "| worker restarts | $restarts |"
echo "| online at the end | ${online_end:-0}/$N |"

status=0
ok_growth() { awk -v g="$1" 'BEGIN {exit !(g != "?" && g < 2)}'; }
ok_growth "$rss_g" || { echo "FAIL: espfleetd RSS grew by $rss_g %" >&2; status=1; }
ok_growth "$fd_g" || { echo "FAIL: espfleetd fds grew by $fd_g %" >&2; status=1; }
[ "$lost" -eq 0 ] || { echo "FAIL: $lost QoS 1 readings lost" >&2; status=1; }
[ "$restarts" -eq 0 ] || { echo "FAIL: $restarts worker restarts" >&2; status=1; }
for ((k = 1; k <= n_ota; k++)); do
        [ "$(ota_done "${versions[$((k - 1))]}")" -ge "$N" ] || { echo "FAIL: OTA $k did not reach every device" >&2; status=1; }
done
exit $status
