#!/usr/bin/env bash
# An image with the running version (and an older one) is refused from its
# first 1,024 bytes; nothing is written and the device keeps running.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image same.bin 1.0.0
ota_image older.bin 0.9.9
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/same.bin"
ota_run "$id"
ota_expect_refused "$id" 'ESP_FAIL: .*same as a new'

mqtt_pub "$T/pki" "/esp/$id/update/url" "https://localhost:$OTA_PORT/older.bin"
mqtt_pub "$T/pki" "/esp/$id/update/use_url" 1
sleep 1
mqtt_pub "$T/pki" "/esp/$id/update/run" ""
wait_count 60 "$T/log.out" "^/esp/$id/log E \([0-9]+\) esp_https_ota: .*older than the running version" 1 \
        || fail "the older image was not refused"
echo "ok: same and older versions refused"
