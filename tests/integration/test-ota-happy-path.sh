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

ota_expect_installed "$id" 1.1.0
grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: New firmware version: 1.1.0" "$T/log.out" \
        || fail "the new version was not logged from the image descriptor"
# s_server -WWW answers HTTP/1.0 without Content-Length: progress is known
# only once the image's own length is (test-ota-nginx.sh checks every 10 %),
# but a final 100 % line and the success line always come before the reboot
grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: Image bytes written: .*\(100 %\)" "$T/log.out" \
        || fail "no final 100 % line"
grep -qE "^/esp/$id/log I \([0-9]+\) .*upgrade successful" "$T/log.out" || fail "no 'upgrade successful' line"
grep -qE "$id: OTA from '.*' done: version 1.1.0 in ota_1 \(1 request\(s\), $(stat -c %s "$OTA_WWW/fw.bin") bytes\)" \
        "$T/espfleetd.log" || fail "no outcome line with the image size in the daemon log"
grep -qE "^/esp/$id/log I \([0-9]+\) boot: otadata\[1\]: new app, marked PENDING_VERIFY" "$T/log.out" \
        || fail "the new app did not boot as PENDING_VERIFY"
grep -qE "^/esp/$id/log .*(ABORTED|rolling back)" "$T/log.out" && fail "a good image was rolled back"

stop_daemon
ota_expect_selected "$id" 1 ESP_OTA_IMG_VALID
echo "ok: OTA happy path"
