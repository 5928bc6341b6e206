#!/usr/bin/env bash
# An ESP32-S3 image offered to an ESP32-C3 device is refused from its first
# 1,024 bytes (ESP_ERR_INVALID_VERSION, "Mismatch chip id", as
# esp_https_ota): final (one request, no retry), nothing is written, the
# device keeps running 1.0.0 and the report says ESP_ERR_INVALID_VERSION.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image s3.bin 2.0.0 --chip esp32s3
start_s_server "$T/pki" "$OTA_WWW"
OTA_REPORT=$T/report.json ota_daemon "https://localhost:$OTA_PORT/s3.bin"
ota_run "$id"
ota_expect_final "$id" 'ESP_ERR_INVALID_VERSION: Mismatch chip id, expected 5 \(esp32c3\), found 9 \(esp32s3\)'
grep -qE "^/esp/$id/log .*Writing to partition" "$T/log.out" && fail "a wrong-chip image was written"
stop_daemon
ota_expect_selected "$id" 0 ESP_OTA_IMG_VALID
# ota_1 was never erased: no byte of it is on disk
"$ESPFLEET" flash info "$T/fleet/devices/$id" | grep -qE '^ +ota_1 +app +ota_1 +0x1a0000 +0x180000 +0 *$' \
        || { "$ESPFLEET" flash info "$T/fleet/devices/$id" >&2; fail "ota_1 was touched"; }
ota_expect_unbootable "$id"
ota_report_check "$T/report.json" "{'$id': 'ESP_ERR_INVALID_VERSION'}"
echo "ok: wrong chip id refused"
