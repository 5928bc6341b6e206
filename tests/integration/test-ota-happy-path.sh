#!/usr/bin/env bash
# The happy path: a signed 1.1.0 served by `openssl s_server -WWW` (as the
# secure_esp README runs it) is downloaded, validated, booted as
# PENDING_VERIFY, confirmed on the broker and marked VALID.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image fw.bin 1.1.0
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/fw.bin"
ota_run "$id"

wait_count 60 "$T/log.out" "^/esp/$id/log I \([0-9]+\) esp_https_ota: ESP_HTTPS_OTA upgrade successful" 1 \
        || fail "no 'upgrade successful'"
grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: New firmware version: 1.1.0" "$T/log.out" \
        || fail "the new version was not logged from the image descriptor"
grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: Image bytes written: .*\(100 %\)" "$T/log.out" \
        || fail "no 100 % progress line"
wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) boot: App version: 1.1.0" 1 \
        || fail "the device did not reboot into 1.1.0"
wait_count 30 "$T/log.out" "^/esp/$id/log .*MQTT_EVENT_CONNECTED" 2 || fail "1.1.0 did not come back online"
# past the confirm timeout: no rollback
sleep 7
grep -qE "^/esp/$id/log .*(ABORTED|rolling back)" "$T/log.out" && fail "a good image was rolled back"

stop_daemon
ota_otadata "$id" | tee "$T/otadata.txt" >&2
grep -qE 'state ESP_OTA_IMG_VALID' "$T/otadata.txt" || fail "the new image is not VALID in otadata"
grep -qE 'selected: entry [01] -> ota_1' "$T/otadata.txt" || fail "otadata does not select ota_1"
echo "ok: OTA happy path"
