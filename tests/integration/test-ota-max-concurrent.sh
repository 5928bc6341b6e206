#!/usr/bin/env bash
# ota.max_concurrent below the fleet (issue #10 "fds"): 20 devices in one
# worker with a cap of 3 update from one broadcast. Every device finishes,
# and nginx's access log shows at no time more than 3 downloads at once:
# each line gives the request's end ($msec) and duration ($request_time),
# and a sweep over the starts and ends finds the largest overlap. nginx
# sees a part of each download's slot (from the request to its last byte),
# so what it sees at once is at most what the worker ran at once.
source "$(dirname "$0")/ota-lib.sh"

n=20
cap=3
ota_fleet "$n"
ota_image fw.bin 1.1.0 --size 262144
size=$(stat -c %s "$OTA_WWW/fw.bin")
port=$(free_port)
# limit_rate makes each download last long enough to overlap the others
ota_nginx "$T/pki" "$OTA_WWW" "$port" \
        "log_format conc '\$msec \$request_time \$status \$body_bytes_sent';" \
        "access_log $T/nginx-conc.log conc;" \
        "limit_rate 1m;"
OTA_CONF="confirm_timeout = 10; max_concurrent = $cap;" ota_daemon "https://localhost:$port/fw.bin" "workers = 1;"
ota_run

wait_count 180 "$T/espfleetd.log" ": OTA from '.*' done: version 1.1.0 in ota_1" "$n" \
        || fail "only $(count_lines "$T/espfleetd.log" ': OTA from .* done') of $n devices installed 1.1.0"
wait_count 60 "$T/log.out" 'esp_ota_ops: App 1.1.0 marked valid, rollback cancelled' "$n" \
        || fail "only $(count_lines "$T/log.out" 'App 1.1.0 marked valid') of $n devices confirmed 1.1.0"
[ "$(grep -cE " 200 $size\$" "$T/nginx-conc.log")" -eq "$n" ] || fail "nginx did not serve $n full downloads"

# max overlap: +1 at each start, -1 at each end; at equal times the end
# comes first (a queued device starts when a slot frees)
overlap() {
        awk '{ end = $1 * 1000; start = end - $2 * 1000; printf "%.0f 1\n%.0f 0\n", start, end }' "$1" |
                sort -k1,1n -k2,2n |
                awk '{ if ($2 == 1) { c++; if (c > m) m = c } else c-- } END { print m + 0 }'
}
max=$(overlap "$T/nginx-conc.log")
echo "largest number of downloads at once seen by nginx: $max (cap $cap)"
[ "$max" -le "$cap" ] || { cat "$T/nginx-conc.log" >&2; fail "$max downloads at once, above ota.max_concurrent = $cap"; }
# the sweep itself must be able to see an overlap: two made-up lines that overlap
printf '1000.500 0.400 200 1\n1000.600 0.300 200 1\n' >"$T/overlap-check.log"
[ "$(overlap "$T/overlap-check.log")" -eq 2 ] || fail "the overlap sweep misses an overlap"

stop_daemon
echo "ok: $n devices updated, at most $max downloads at once (cap $cap)"
