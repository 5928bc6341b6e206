#!/usr/bin/env bash
# A boot-fail firmware is written and selected, fails to start, and the
# bootloader rolls back to the previous app.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image bad.bin 1.2.0 --behaviour boot-fail
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/bad.bin"
ota_run "$id"
wait_count 60 "$T/log.out" "^/esp/$id/log I \([0-9]+\) esp_https_ota: ESP_HTTPS_OTA upgrade successful" 1 \
        || fail "the image was not installed"
wait_count 30 "$T/log.out" "^/esp/$id/log E \([0-9]+\) boot: .*boot-fail firmware" 1 || fail "no boot failure line"
wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) boot: App version: 1.0.0" 1 \
        || fail "the device did not fall back to 1.0.0"
echo "ok: boot-fail firmware rolled back"
