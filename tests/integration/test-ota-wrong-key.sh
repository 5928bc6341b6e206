#!/usr/bin/env bash
# Images signed with a key whose digest is not in the device's eFuse (an
# RSA-3072 one, then an ECDSA P-256 one) are downloaded in full and refused
# with ESP_ERR_OTA_VALIDATE_FAILED; the device keeps running 1.0.0.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
for t in rsa3072 ecdsa256; do
        "$ESPFLEET" image keygen --type "$t" -o "$T/other-$t.pem" >>"$T/image.log" 2>&1 || fail "keygen $t"
        "$ESPFLEET" image build --version 2.0.0 -o "$OTA_WWW/$t.bin" >>"$T/image.log" 2>&1 || fail "image build"
        "$ESPFLEET" image sign --key "$T/other-$t.pem" "$OTA_WWW/$t.bin" >>"$T/image.log" 2>&1 || fail "image sign"
        # the images themselves are sound: they verify against their own key
        "$ESPFLEET" image verify "$OTA_WWW/$t.bin" --key "$T/other-$t.pem" >>"$T/image.log" 2>&1 \
                || fail "$t.bin does not verify with its own key"
done
start_s_server "$T/pki" "$OTA_WWW"
ota_daemon "https://localhost:$OTA_PORT/rsa3072.bin"

ota_run "$id"
ota_expect_refused "$id" 'ESP_ERR_OTA_VALIDATE_FAILED: secure boot check fail'
grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: New firmware version: 2.0.0" "$T/log.out" \
        || fail "the rsa3072 image was not read up to its descriptor"

ota_set_url "$id" "https://localhost:$OTA_PORT/ecdsa256.bin"
mqtt_pub "$T/pki" "/esp/$id/update/run" ""
wait_count 60 "$T/log.out" "^/esp/$id/log E \([0-9]+\) esp_https_ota: ESP_HTTPS_OTA upgrade failed: ESP_ERR_OTA_VALIDATE_FAILED" 2 \
        || fail "the ecdsa256 image was not refused"
ota_expect_status "$id" online 1.0.0
[ "$(count_lines "$T/espfleetd.log" "$id: OTA from '.*' failed: ESP_ERR_OTA_VALIDATE_FAILED")" -eq 2 ] \
        || fail "expected two ESP_ERR_OTA_VALIDATE_FAILED outcome lines in the daemon log"

stop_daemon
ota_expect_selected "$id" 0 ESP_OTA_IMG_VALID
echo "ok: images signed with a foreign key refused"
