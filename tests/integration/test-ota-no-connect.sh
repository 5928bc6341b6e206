#!/usr/bin/env bash
# A no-connect firmware is installed and boots (PENDING_VERIFY) but never
# reaches the broker: after confirm_timeout it is marked invalid and the
# device rolls back to 1.0.0, which comes back online.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image nc.bin 1.3.0 --behaviour no-connect
start_s_server "$T/pki" "$OTA_WWW"
OTA_CONF='confirm_timeout = 2;' ota_daemon "https://localhost:$OTA_PORT/nc.bin"
ota_run "$id"
wait_count 60 "$T/espfleetd.log" "$id: OTA from '.*' done: version 1.3.0 in ota_1 " 1 || fail "the image was not installed"
wait_count 30 "$T/espfleetd.log" "$id: Running 1.3.0, a no-connect firmware" 1 || fail "1.3.0 did not run"
# the rollback notice is queued and published once 1.0.0 is back online
wait_count 30 "$T/log.out" "^/esp/$id/log E \([0-9]+\) esp_ota_ops: App 1.3.0 not confirmed within 2 s: marked invalid, rolling back" 1 \
        || fail "no rollback line"
wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) boot: App version: 1.0.0 " 2 || fail "1.0.0 did not boot again"
wait_count 30 "$T/log.out" "^/esp/$id/log .*MQTT_EVENT_CONNECTED" 2 || fail "1.0.0 did not come back online"
grep -qE "^/esp/$id/log .*App 1.3.0 marked valid" "$T/log.out" && fail "the no-connect app was confirmed"
ota_expect_status "$id" online 1.0.0
stop_daemon
ota_expect_selected "$id" 0 ESP_OTA_IMG_VALID
echo "ok: no-connect firmware rolled back"
