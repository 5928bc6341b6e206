#!/usr/bin/env bash
# An image with the running version, then an older one, is refused from its
# first 1,024 bytes (ESP_FAIL, as esp_https_ota), each final (one request, no
# retry): nothing is selected, the device keeps running 1.0.0, and the report
# counts two ESP_FAIL.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image same.bin 1.0.0
ota_image older.bin 0.9.10
start_s_server "$T/pki" "$OTA_WWW"
OTA_REPORT=$T/report.json ota_daemon "https://localhost:$OTA_PORT/same.bin"
ota_run "$id"
ota_expect_final "$id" "ESP_FAIL: Current running version '1.0.0' is the same as a new"

# 0.9.10 > 0.9.9 as strings would say otherwise: compared as a version
ota_set_url "$id" "https://localhost:$OTA_PORT/older.bin"
mqtt_pub "$T/pki" "/esp/$id/update/run" ""
ota_expect_final "$id" "ESP_FAIL: New firmware version '0.9.10' is older than the running version '1.0.0'"
grep -qE "^/esp/$id/log .*Writing to partition" "$T/log.out" && fail "a refused image was written"

stop_daemon
ota_expect_unbootable "$id"
ota_report_check "$T/report.json" "{'$id': 'ESP_FAIL'}" "{'ESP_FAIL': 2}"
echo "ok: same and older versions refused"
