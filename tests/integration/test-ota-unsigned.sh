#!/usr/bin/env bash
# An unsigned image is refused with ESP_ERR_OTA_VALIDATE_FAILED after the
# download; otadata still selects the old app, which keeps running.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
"$ESPFLEET" image build --version 2.0.0 -o "$OTA_WWW/unsigned.bin" >>"$T/image.log" 2>&1 || fail "image build"
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/unsigned.bin"
ota_run "$id"
ota_expect_refused "$id" 'ESP_ERR_OTA_VALIDATE_FAILED: secure boot check fail: the image is not signed'
stop_daemon
ota_expect_selected "$id" 0 ESP_OTA_IMG_VALID
echo "ok: unsigned image refused"
