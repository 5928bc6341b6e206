#!/usr/bin/env bash
# An unsigned image is refused with ESP_ERR_OTA_VALIDATE_FAILED after the
# download, and its slot is left unbootable.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
"$ESPFLEET" image build --version 2.0.0 -o "$OTA_WWW/unsigned.bin" >>"$T/image.log" 2>&1 || fail "image build"
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/unsigned.bin"
ota_run "$id"
ota_expect_refused "$id" 'ESP_ERR_OTA_VALIDATE_FAILED'
echo "ok: unsigned image refused"
