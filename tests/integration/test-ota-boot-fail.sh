#!/usr/bin/env bash
# A boot-fail firmware is written and selected, fails to start, and the
# bootloader rolls back to the previous app, which comes back online.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image bad.bin 1.2.0 --behaviour boot-fail
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/bad.bin"
ota_run "$id"
wait_count 60 "$T/espfleetd.log" "$id: OTA from '.*' done: version 1.2.0 in ota_1 " 1 \
        || fail "the image was not installed"
wait_count 30 "$T/log.out" "^/esp/$id/log E \([0-9]+\) boot: .*boot-fail firmware" 1 || fail "no boot failure line"
wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) boot: App version: 1.0.0 " 2 \
        || fail "the device did not fall back to 1.0.0"
wait_count 30 "$T/log.out" "^/esp/$id/log .*MQTT_EVENT_CONNECTED" 2 || fail "1.0.0 did not come back online"
grep -qE "^/esp/$id/log I \([0-9]+\) boot: App version: 1.2.0" "$T/log.out" && fail "the boot-fail app ran"
ota_expect_status "$id" online 1.0.0
stop_daemon
ota_expect_selected "$id" 0 ESP_OTA_IMG_VALID
echo "ok: boot-fail firmware rolled back"
