#!/usr/bin/env bash
# device.default_interval applies while NVS holds no interval (issue #9 §4):
# a device that was never sent /esp/update/interval checks for an update
# every default_interval seconds on its own. With no URL to look at, the
# periodic check stays quiet instead of warning every period.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image same.bin 1.0.0
start_s_server "$T/pki" "$OTA_WWW"
write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; default_interval = 2; };' \
        "ota = { default_url = \"https://localhost:$OTA_PORT/same.bin\"; };"
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/log.out" "^/esp/$id/log .*MQTT_EVENT_CONNECTED" 1 || fail "the device did not come online"
wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) esp_https_ota: Starting OTA" 2 \
        || fail "no periodic OTA check every device.default_interval seconds"
stop_daemon

# no URL anywhere: the periodic check is skipped without a warning
write_conf "$T/nourl.conf" "$T/fleet" 'device = { boot_time_ms = 100; default_interval = 1; };'
start_daemon "$T/nourl.conf" nourl
wait_count 60 "$T/nourl.log" "Initial ramp done: 1/1" 1 || fail "the device did not come online"
sleep 4
grep -q "OTA not started" "$T/nourl.log" && fail "the periodic check warned about the missing URL"
stop_daemon
echo "ok: device.default_interval drives the periodic OTA check"
