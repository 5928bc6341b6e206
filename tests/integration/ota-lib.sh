# shellcheck shell=bash
# Helpers shared by the OTA scenarios (tests/integration/test-ota-*.sh), on
# top of lib.sh: a provisioned fleet on a real mosquitto, firmware images
# built and signed with the espfleet CLI, served by `openssl s_server -WWW`
# or nginx, and the daemon. The lines checked are the ones src/ota emits
# (esp_https_ota / boot tags), as the device publishes them on its log topic.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OTA_WWW=$T/www
mkdir -p "$OTA_WWW"

# ota_fleet N [PROVISION ARGS...]: PKI, N devices, broker, log subscriber -> $T/log.out
ota_fleet() {
        local n=$1; shift
        pki_init "$T/pki"
        provision "$T/fleet" "$T/pki" "$n" "$@"
        start_mosquitto "$T/pki"
        mqtt_sub_bg "$T/pki" "$T/log.out" '/esp/+/log' '/esp/+/status'
        mapfile -t OTA_IDS < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)
}

# ota_image FILE VERSION [BUILD ARGS...]: a firmware signed with the fleet key in $OTA_WWW
ota_image() {
        local file=$1 version=$2; shift 2
        "$ESPFLEET" image build --version "$version" "$@" -o "$OTA_WWW/$file" >>"$T/image.log" 2>&1 \
                || { cat "$T/image.log" >&2; fail "image build $file"; }
        "$ESPFLEET" image sign --key "$T/pki/secure_boot_signing_key.pem" "$OTA_WWW/$file" >>"$T/image.log" 2>&1 \
                || { cat "$T/image.log" >&2; fail "image sign $file"; }
}

# ota_daemon URL [EXTRA CONFIG LINES...]: the daemon, devices online.
ota_daemon() {
        local url=$1; shift
        write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; };' \
                "ota = { default_url = \"$url\"; confirm_timeout = 5; };" "$@"
        start_daemon "$T/espfleetd.conf"
        wait_count 90 "$T/log.out" 'MQTT_EVENT_CONNECTED' "${#OTA_IDS[@]}" || fail "devices did not come online"
}

# ota_run [ID]: /esp/update/run (broadcast without ID). Skips the scenario
# (exit 77) while the daemon still answers that OTA is not available.
ota_run() {
        local topic=/esp/update/run
        [ $# -eq 0 ] || topic=/esp/$1/update/run
        mqtt_pub "$T/pki" "$topic" ""
        local end=$((SECONDS + 10))
        while [ "$SECONDS" -lt "$end" ]; do
                if grep -q 'OTA is not available in this build' "$T/log.out"; then
                        echo "SKIP: this espfleetd does not run OTA yet" >&2
                        exit 77
                fi
                grep -qE 'esp_https_ota: Starting OTA' "$T/log.out" && return 0
                sleep 0.3
        done
        fail "no 'Starting OTA' line after $topic"
}

# ota_expect_refused ID REGEX: the OTA of ID fails with a line matching REGEX,
# and the device keeps running its version (no reboot into ota_1).
ota_expect_refused() {
        local id=$1 re=$2
        wait_count 60 "$T/log.out" "^/esp/$id/log E \([0-9]+\) esp_https_ota: ESP_HTTPS_OTA upgrade failed: $re" 1 \
                || fail "$id: no 'upgrade failed: $re' line"
        sleep 1
        if grep -qE "^/esp/$id/log .*upgrade successful" "$T/log.out"; then
                fail "$id: a refused image was accepted"
        fi
}

# ota_otadata ID: 'espfleet flash info' of a device (otadata part), daemon stopped.
ota_otadata() {
        "$ESPFLEET" flash info "$T/fleet/devices/$1" 2>&1 | sed -n '/^otadata/,/selected/p'
}
