#!/usr/bin/env bash
# A fleet of 50 updates from one broadcast /esp/update/run: nginx over TLS
# serves a 256 KiB image, the start jitter spreads the starts over 1 s, and
# every device downloads, verifies, reboots into 1.1.0 and marks it valid.
source "$(dirname "$0")/ota-lib.sh"

n=50
ota_fleet "$n"
[ "${#OTA_IDS[@]}" -eq "$n" ] || fail "provisioned ${#OTA_IDS[@]} devices, expected $n"
ota_image fw.bin 1.1.0 --size 262144
size=$(stat -c %s "$OTA_WWW/fw.bin")
port=$(free_port)
ota_nginx "$T/pki" "$OTA_WWW" "$port"
OTA_CONF='confirm_timeout = 10; start_jitter_ms = 1000;' ota_daemon "https://localhost:$port/fw.bin"
ota_run

wait_count 120 "$T/espfleetd.log" ": OTA from '.*' done: version 1.1.0 in ota_1 \(1 request\(s\), $size bytes\)" "$n" \
        || fail "only $(count_lines "$T/espfleetd.log" ': OTA from .* done') of $n devices installed 1.1.0"
wait_count 60 "$T/log.out" 'esp_ota_ops: App 1.1.0 marked valid, rollback cancelled' "$n" \
        || fail "only $(count_lines "$T/log.out" 'App 1.1.0 marked valid') of $n devices confirmed 1.1.0"
[ "$(count_lines "$T/log.out" 'ota: Start jitter: waiting [0-9]+ ms')" -eq "$n" ] || fail "not every start was jittered"
# the lines published right before the reboot reach the broker too
[ "$(count_lines "$T/log.out" 'upgrade successful')" -eq "$n" ] \
        || fail "only $(count_lines "$T/log.out" 'upgrade successful') of $n 'upgrade successful' lines arrived"
[ "$(count_lines "$T/log.out" 'Image bytes written: .*\(100 %\)')" -eq "$n" ] || fail "not every device logged 100 %"
for id in "${OTA_IDS[@]}"; do
        grep -qE "^/esp/$id/log I \([0-9]+\) boot: App version: 1.1.0 " "$T/log.out" || fail "$id: did not boot 1.1.0"
        ota_expect_status "$id" online 1.1.0
done
[ "$(grep -cE "^200 \"-\" $size\$" "$T/nginx-access.log")" -eq "$n" ] || fail "nginx did not serve $n full downloads"
grep -qE 'upgrade failed|rolling back' "$T/log.out" && fail "a device failed or rolled back"

stop_daemon
for id in "${OTA_IDS[@]}"; do ota_expect_selected "$id" 1 ESP_OTA_IMG_VALID; done
"$ESPFLEET" device list "$T/fleet" >"$T/list.txt" 2>&1 || fail "device list"
[ "$(grep -cE '^[0-9]+ +esp-[0-9a-f]{6} +[0-9a-f:]{17} +1\.1\.0 ' "$T/list.txt")" -eq "$n" ] \
        || { cat "$T/list.txt" >&2; fail "device list does not show $n devices on 1.1.0"; }
echo "ok: $n devices updated from one broadcast"
