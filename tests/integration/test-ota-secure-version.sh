#!/usr/bin/env bash
# Anti-rollback: 2.0.0 with secure_version 2 is installed and, once marked
# valid, raises the eFuse SECURE_VERSION to 2. Then 3.0.0 with
# secure_version 1 (a newer version, but a lower security version) is
# refused with ESP_ERR_OTA_SMALL_SEC_VER before anything is written.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image sv2.bin 2.0.0 --secure-version 2
ota_image sv1.bin 3.0.0 --secure-version 1
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/sv2.bin"
ota_run "$id"
ota_expect_installed "$id" 2.0.0

ota_set_url "$id" "https://localhost:$OTA_PORT/sv1.bin"
mqtt_pub "$T/pki" "/esp/$id/update/run" ""
ota_expect_refused "$id" 'ESP_ERR_OTA_SMALL_SEC_VER: New firmware security version is less than eFuse programmed, 1 < 2' 2.0.0
grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: Starting OTA from '.*/sv1.bin'" "$T/log.out" \
        || fail "no OTA of sv1.bin started"
sed -n "\#^/esp/$id/log I ([0-9]*) esp_https_ota: Starting OTA from '.*/sv1.bin'#,\$p" "$T/log.out" \
        | grep -qE "Writing to partition|New firmware version" && fail "the secure_version 1 image was written"

stop_daemon
ota_expect_selected "$id" 1 ESP_OTA_IMG_VALID
"$ESPFLEET" efuse summary "$T/fleet/devices/$id" >"$T/efuse.txt" 2>&1 || fail "efuse summary"
# a thermometer code, shown raw as espefuse does: secure_version 2 = 0b11
grep -qE '^SECURE_VERSION .*= 3 R/W \(0x0003\)' "$T/efuse.txt" \
        || { grep SECURE_VERSION "$T/efuse.txt" >&2; fail "eFuse SECURE_VERSION is not 2 (0b11)"; }
echo "ok: lower secure_version refused"
