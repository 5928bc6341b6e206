#!/usr/bin/env bash
# OTA benchmark (issue #5): N devices update at once from a local nginx over
# TLS, measured in ONE run on this machine, against the same nginx and file:
#   1. aggregate throughput of the fleet's downloads: N x image size over the
#      wall time from the broadcast /esp/update/run until every device has
#      downloaded, hashed, signature-checked and selected the image (the
#      daemon's per-device "OTA … done" lines); next to it the baseline,
#      `curl --parallel --parallel-max N` fetching the same file N times;
#   2. RSS per active download: espfleetd's RSS (all processes) sampled every
#      0.1 s during the downloads, minus its idle RSS with the fleet online,
#      divided by the downloads active at that sample (the sample with the
#      most active downloads). The sampling loop runs on the same 2 cores and
#      the fleet time includes TLS handshakes, hashing, the signature check
#      and the flash writes (erase + write into a sparse file), so the
#      fleet/curl ratio is a lower bound;
#   3. disk per device after the update: `du` of the device directory (the
#      flash is a sparse file: erased sectors cost nothing; its app slots
#      live in the fleet's sector store, FLEET/store, reported apart).
#
#   bench/ota.sh                        # N=100, 1 MiB image
#   N=1000 bench/ota.sh                 # the 1,000-device run
#   SIZE=4M BUILD=build-x bench/ota.sh  # another image size or build dir
#   WORKERS=2 N=1000 bench/ota.sh       # worker processes (default 0: sized by the fd limit)
#   BASELINE=0 N=19500 bench/ota.sh     # no curl run (19,500 transfers at once would
#       need more fds than curl may open); counts EMFILE in the daemon's log
#   RESTART_AFTER=1.5 DOWN=2 N=1000 bench/ota.sh
#       the herd against a server restart: RESTART_AFTER s after the
#       broadcast nginx stops (fast shutdown: every download is cut), stays
#       down DOWN s and starts again on the same port; every device must
#       still finish. The devices' resumes (Range), retries and restarts
#       from byte 0 are counted from their logs, with or without a restart.
#       On loopback nginx hands a 1 MiB body to the kernel at once, and the
#       socket buffers deliver it after nginx is gone: LIMIT_RATE (nginx's
#       limit_rate per connection, e.g. 512k) keeps the downloads in flight,
#       so that the stop cuts them (the curl baseline gets the same limit).
# The fleet is provisioned once in $BENCH_DIR/fleet-N (RSA keys drawn from a
# pool of KEY_POOL, 16 by default: key generation is not what is measured)
# and reused: every run offers a newer version (2.<epoch seconds>), so it
# updates again.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. scripts/deps.sh
ensure_deps
BUILD=${BUILD:-build}
ensure_build "$BUILD" >/dev/null

N=${N:-100}
SIZE=${SIZE:-1048576}
BENCH_DIR=${BENCH_DIR:-/var/tmp/espfleet-bench-ota}
TIMEOUT=${TIMEOUT:-600}
RESTART_AFTER=${RESTART_AFTER:-}
DOWN=${DOWN:-2}
LIMIT_RATE=${LIMIT_RATE:-}
nginx_extra=()
[ -z "$LIMIT_RATE" ] || nginx_extra=("limit_rate $LIMIT_RATE;")
export ESPFLEET=$top/$BUILD/src/cli/espfleet ESPFLEETD=$top/$BUILD/src/sim/espfleetd
. tests/integration/ota-lib.sh

PKI=$BENCH_DIR/pki
FLEET=$BENCH_DIR/fleet-$N
mkdir -p "$BENCH_DIR"
[ -f "$PKI/$PKI_CA" ] || "$ESPFLEET" pki init "$PKI" >/dev/null
have=$( [ -f "$FLEET/manifest.csv" ] && tail -n +2 "$FLEET/manifest.csv" | wc -l || echo 0)
if [ "$have" -lt "$N" ]; then
        log "provisioning $((N - have)) devices in $FLEET (--key-pool ${KEY_POOL:-16})"
        "$ESPFLEET" provision "$FLEET" --pki "$PKI" --count "$N" --key-pool "${KEY_POOL:-16}" --quiet
fi
mapfile -t ids < <(tail -n +2 "$FLEET/manifest.csv" | cut -d, -f2 | head -n "$N")
# a fleet provisioned before the sector store joins it at the next daemon start
mkdir -p "$FLEET/store"

version=2.$(date +%s)
"$ESPFLEET" image build --version "$version" --size "$SIZE" -o "$OTA_WWW/fw.bin" >/dev/null
"$ESPFLEET" image sign --key "$PKI/secure_boot_signing_key.pem" "$OTA_WWW/fw.bin" >/dev/null
bytes=$(stat -c %s "$OTA_WWW/fw.bin")

start_mosquitto "$PKI"
mqtt_sub_bg "$PKI" "$T/log.out" '/esp/+/log'
port=$(free_port)
ota_nginx "$PKI" "$OTA_WWW" "$port" "${nginx_extra[@]}"
url="https://localhost:$port/fw.bin"

write_conf "$T/bench.conf" "$FLEET" \
        "device_count = $N;" \
        "ramp = { rate = 100000.0; jitter = 0.0; };" \
        "reconnect = { connect_rate_max = 100000.0; };" \
        "device = { boot_time_ms = 0; };" \
        "ota = { default_url = \"$url\"; confirm_timeout = 60; start_jitter_ms = 0; };" \
        "log = { summary_interval = 0; };" \
        "workers = ${WORKERS:-0};"
start_daemon "$T/bench.conf"
wait_count "$TIMEOUT" "$T/log.out" 'MQTT_EVENT_CONNECTED' "$N" || fail "only $(count_lines "$T/log.out" MQTT_EVENT_CONNECTED)/$N devices online"

rss_kb() {
        local p r sum=0
        for p in $DAEMON_PID $(pgrep -P "$DAEMON_PID"); do
                r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
                sum=$((sum + ${r:-0}))
        done
        echo "$sum"
}
sleep 2   # let the connections settle before the idle sample
idle=$(rss_kb)

# 1+2. The fleet: one broadcast, then samples of "t rss started finished".
log "fleet: $N devices fetch $bytes bytes each from nginx over TLS"
finished() { count_lines "$T/espfleetd.log" ": OTA from '.*' (done|failed)"; }
: >"$T/samples"
t0=$(date +%s.%N)
mqtt_pub "$PKI" /esp/update/run ""
end=$((SECONDS + TIMEOUT))
restarted=
while :; do
        if [ -n "$RESTART_AFTER" ] && [ -z "$restarted" ] &&
                awk -v a="$t0" -v b="$(date +%s.%N)" -v r="$RESTART_AFTER" 'BEGIN {exit !(b - a >= r)}'; then
                restarted="$(count_lines "$T/log.out" 'esp_https_ota: Starting OTA') started, $(finished) finished"
                log "t=${RESTART_AFTER}s: nginx stops ($restarted), down for $DOWN s"
                kill -TERM "$NGINX_PID"
                wait "$NGINX_PID" 2>/dev/null || true
                sleep "$DOWN"
                ota_nginx "$PKI" "$OTA_WWW" "$port" "${nginx_extra[@]}"
                restarted="$restarted when it stopped, down $DOWN s"
        fi
        f=$(finished)
        echo "$(date +%s.%N) $(rss_kb) $(count_lines "$T/log.out" 'esp_https_ota: Starting OTA') $f" >>"$T/samples"
        [ "$f" -lt "$N" ] || break
        [ "$SECONDS" -lt "$end" ] || fail "only $f/$N downloads finished after $TIMEOUT s"
        sleep 0.1
done
t1=$(tail -n 1 "$T/samples" | cut -d' ' -f1)
ok=$(count_lines "$T/espfleetd.log" ": OTA from '.*' done: version $version ")
[ "$ok" -eq "$N" ] || fail "$((N - ok)) of $N downloads failed: $(grep -m1 -E ": OTA from '.*' failed" "$T/espfleetd.log")"
fleet_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
fleet_bps=$(awk -v n="$N" -v b="$bytes" -v s="$fleet_s" 'BEGIN {printf "%.0f", n * b / s}')
# what the devices did about cuts (their esp_https_ota log lines)
resumes=$(count_lines "$T/log.out" 'esp_https_ota: Resuming the download at byte')
retries=$(count_lines "$T/log.out" 'esp_https_ota: Download failed .*; retry')
from_zero=$(count_lines "$T/log.out" 'esp_https_ota: .*restarting from byte 0')
# the sample with the most active downloads (started - finished), highest RSS among those
read -r active peak < <(awk '{a = $3 - $4; print a, $2}' "$T/samples" | sort -k1,1n -k2,2n | tail -n 1)
per_dl=$(awk -v p="$peak" -v i="$idle" -v a="$active" 'BEGIN {printf "%.0f", a ? (p - i) / a : 0}')

# 3. Disk per device once every device runs the new image (daemon stopped).
wait_count "$TIMEOUT" "$T/log.out" "esp_ota_ops: App $version marked valid" "$N" \
        || log "only $(count_lines "$T/log.out" "App $version marked valid")/$N devices confirmed $version"
stop_daemon
disk_kb=$(for id in "${ids[@]}"; do du -sk "$FLEET/devices/$id" | cut -f1; done | awk '{s += $1} END {printf "%.0f", s / NR}')
flash_kb=$(for id in "${ids[@]}"; do du -k "$FLEET/devices/$id/flash.bin" | cut -f1; done | awk '{s += $1} END {printf "%.0f", s / NR}')
map_kb=$(for id in "${ids[@]}"; do du -k "$FLEET/devices/$id/flash.bin.map" 2>/dev/null | cut -f1 || echo 0; done |
        awk '{s += $1} END {printf "%.0f", s / NR}')
# the images of earlier runs that no slot holds any more go first
"$ESPFLEET" store gc "$FLEET" >"$T/store-gc.txt" 2>&1 || { cat "$T/store-gc.txt" >&2; fail "store gc"; }
store_kb=$(du -sk "$FLEET/store" 2>/dev/null | cut -f1 || echo 0)
"$ESPFLEET" store stat "$FLEET" >"$T/store.txt" 2>&1 || { cat "$T/store.txt" >&2; fail "store stat"; }

emfile=$(count_lines "$T/espfleetd.log" 'EMFILE|Too many open files')
# Baseline: curl fetches the same file N times in parallel from the same nginx.
if [ "${BASELINE:-1}" != 0 ]; then
        log "baseline: curl --parallel --parallel-max $N, $N x $url"
        for ((i = 0; i < N; i++)); do
                printf 'url = "%s"\noutput = "/dev/null"\n' "$url"
        done >"$T/curl.conf"
        c0=$(date +%s.%N)
        curl -sS --parallel --parallel-immediate --parallel-max "$N" --cacert "$PKI/$PKI_CA" \
                -w '%{http_code} %{size_download}\n' -K "$T/curl.conf" >"$T/curl.out" 2>"$T/curl.log" \
                || { cat "$T/curl.log" >&2; fail "curl failed"; }
        c1=$(date +%s.%N)
        [ "$(grep -cx "200 $bytes" "$T/curl.out")" -eq "$N" ] || fail "curl did not fetch $N full copies"
        curl_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')
        curl_bps=$(awk -v n="$N" -v b="$bytes" -v s="$curl_s" 'BEGIN {printf "%.0f", n * b / s}')
else
        curl_s=- curl_bps=0
fi

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo
echo "\`N=$N SIZE=$SIZE bench/ota.sh\` ($(nproc) cores, $(nginx -v 2>&1 | sed 's/.*\///'), $(curl --version | head -n 1 | cut -d' ' -f1-2))"
echo
echo "| measure | value |"
echo "|---|---|"
printf '| image | %s bytes (signed, version %s) |\n' "$bytes" "$version"
printf '| fleet: %s devices, one broadcast, until all verified and selected | %s s, %s MiB/s aggregate |\n' \
        "$N" "$fleet_s" "$(mib "$fleet_bps")"
if [ "$curl_bps" -gt 0 ]; then
        printf '| baseline: curl --parallel --parallel-max %s, same file x %s | %s s, %s MiB/s aggregate |\n' \
                "$N" "$N" "$curl_s" "$(mib "$curl_bps")"
else
        echo "| baseline: curl | not run (BASELINE=0) |"
fi
[ -z "$LIMIT_RATE" ] || printf '| nginx limit_rate per connection | %s |\n' "$LIMIT_RATE"
if [ -n "$restarted" ]; then
        printf '| nginx restarted %s s after the broadcast | %s |\n' "$RESTART_AFTER" "$restarted"
fi
printf '| retries / resumes with Range / restarts from byte 0 | %s / %s / %s |\n' "$retries" "$resumes" "$from_zero"
printf '| fleet / curl throughput | %s |\n' "$(awk -v f="$fleet_bps" -v c="$curl_bps" 'BEGIN {if (c) printf "%.2f", f / c; else printf "-"}')"
printf '| "Too many open files" (EMFILE) in the daemon'"'"'s log | %s |\n' "$emfile"
printf '| espfleetd RSS idle (fleet online) -> peak | %s MiB -> %s MiB |\n' "$((idle / 1024))" "$((peak / 1024))"
printf '| RSS per active download (%s active at the peak) | %s KiB |\n' "$active" "$per_dl"
printf '| disk per device after the update (du of the device dir) | %s KiB (flash.bin %s KiB of 4096 KiB, flash.bin.map %s KiB) |\n' \
        "$disk_kb" "$flash_kb" "$map_kb"
printf '| the fleet'"'"'s sector store, shared by all %s devices (du) | %s KiB (%s distinct sectors) |\n' \
        "$N" "$store_kb" "$(awk '/^sectors stored:/ {print $3}' "$T/store.txt")"
