#!/usr/bin/env bash
# Per-device and broadcast commands with secure_esp semantics, answered on
# each device's log topic in ESP-IDF format.
source "$(dirname "$0")/lib.sh"
N=3

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/log.out" '/esp/+/log' '/esp/+/status'
write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };'
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/log.out" 'MQTT_EVENT_CONNECTED' "$N" || fail "devices did not come online"

mapfile -t ids < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)
one=${ids[0]}

# per device: only that device answers
mqtt_pub "$T/pki" "/esp/$one/update/url" "https://ota.example:8070/secure_esp.bin"
wait_count 10 "$T/log.out" "^/esp/$one/log I \([0-9]+\) secure_esp: update/url: saved 'https://ota.example:8070/secure_esp.bin'" 1 \
        || fail "$one did not store the URL"
sleep 1
[ "$(count_lines "$T/log.out" 'update/url: saved')" -eq 1 ] || fail "a per-device command reached other devices"

# broadcast: every device answers
mqtt_pub "$T/pki" /esp/update/interval 600
wait_count 10 "$T/log.out" 'update/interval: saved 600 s, effective after restart' "$N" \
        || fail "broadcast interval did not reach every device"
mqtt_pub "$T/pki" /esp/update/use_url 1
wait_count 10 "$T/log.out" 'update/use_url: saved 1' "$N" || fail "broadcast use_url"
for id in "${ids[@]}"; do
        grep -qE "^/esp/$id/log I \([0-9]+\) secure_esp: update/use_url: saved 1" "$T/log.out" || fail "$id: no use_url answer"
done

# run with use_url = 1 and no stored URL (ids[1]) is refused with a reason
mqtt_pub "$T/pki" "/esp/${ids[1]}/update/run" ""
wait_count 10 "$T/log.out" "^/esp/${ids[1]}/log E \([0-9]+\) secure_esp: update/run: use_url is 1 but no url is stored" 1 \
        || fail "update/run without a URL was not answered"

# every accepted command is in the daemon log with the device id
grep -q "$one.*Command update/url accepted" "$T/espfleetd.log" || fail "daemon log lacks the accepted url command"
echo "ok: per-device and broadcast commands"
