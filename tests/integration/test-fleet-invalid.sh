#!/usr/bin/env bash
# Invalid payloads are rejected with a log line saying why, and change nothing
# (checked after a restart, which re-reads the stored settings).
source "$(dirname "$0")/lib.sh"

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" 1
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/log.out" '/esp/+/log'
write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; };'
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/log.out" 'MQTT_EVENT_CONNECTED' 1 || fail "device did not come online"
id=$(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)

mqtt_pub "$T/pki" "/esp/$id/update/url" "https://good.example/fw.bin"
mqtt_pub "$T/pki" "/esp/$id/update/interval" "1200"
wait_count 10 "$T/log.out" 'update/interval: saved 1200' 1 || fail "valid interval not stored"

check_reject() { # TOPIC PAYLOAD REASON-REGEX
        local before
        before=$(count_lines "$T/log.out" 'rejected')
        mqtt_pub "$T/pki" "$1" "$2"
        wait_count 10 "$T/log.out" 'rejected' $((before + 1)) || fail "'$2' on $1 was not rejected"
        tail -n 1 "$T/log.out" | grep -qE "^/esp/$id/log W \([0-9]+\) secure_esp: .*rejected: .*$3" \
                || fail "rejection of '$2' on $1 lacks the reason '$3': $(tail -n 1 "$T/log.out")"
}
check_reject "/esp/$id/update/url" "http://plain.example/fw.bin" "only https:// URLs"
check_reject "/esp/update/url" "ftp://x/y" "only https:// URLs"
check_reject "/esp/$id/update/url" "https://$(head -c 300 /dev/zero | tr '\0' a)" "at most 255"
check_reject "/esp/$id/update/use_url" "2" 'use_url must be "0" or "1"'
check_reject "/esp/update/use_url" "yes" 'use_url must be "0" or "1"'
check_reject "/esp/$id/update/interval" "299" "out of range 300..9999999"
check_reject "/esp/$id/update/interval" "10000000" "out of range"
check_reject "/esp/update/interval" "12abc" "integer"
grep -q "$id.*Command update/url rejected: only https" "$T/espfleetd.log" || fail "daemon log lacks the rejection"

# nothing changed: restart and look at what the device loaded
mqtt_pub "$T/pki" "/esp/$id/restart" ""
wait_count 20 "$T/log.out" 'MQTT_EVENT_CONNECTED' 2 || fail "device did not come back after restart"
wait_count 10 "$T/log.out" "interval=1200 use_url=0 url='https://good.example/fw.bin'" 1 \
        || fail "settings changed by rejected payloads: $(grep 'interval=' "$T/log.out" | tail -n 1)"
echo "ok: invalid payloads rejected, settings unchanged"
