#!/usr/bin/env bash
# /esp/restart reboots the device (offline, boot time, online) keeping its
# settings; the interval takes effect after the restart; a daemon restart
# keeps them too.
source "$(dirname "$0")/lib.sh"

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" 2
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/log.out" '/esp/+/log' '/esp/+/status'
write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 300; };'
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/log.out" 'MQTT_EVENT_CONNECTED' 2 || fail "devices did not come online"
mapfile -t ids < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)
id=${ids[0]} other=${ids[1]}

mqtt_pub "$T/pki" "/esp/$id/update/url" "https://keep.example/fw.bin"
mqtt_pub "$T/pki" "/esp/$id/update/use_url" "1"
mqtt_pub "$T/pki" "/esp/$id/update/interval" "4321"
wait_count 10 "$T/log.out" 'update/interval: saved 4321' 1 || fail "settings not stored"
# still the old interval until the restart (secure_esp: effective after restart)
grep -q "^/esp/$id/log .*interval=4321 " "$T/log.out" && fail "interval applied before restart"

mqtt_pub "$T/pki" "/esp/$id/restart" ""
wait_count 20 "$T/log.out" "^/esp/$id/status .*\"state\":\"offline\"" 1 || fail "no offline status on restart"
wait_count 20 "$T/log.out" "^/esp/$id/log I \([0-9]+\) secure_esp: interval=4321 use_url=1 url='https://keep.example/fw.bin'" 1 \
        || fail "settings not kept across /esp/restart"
# the other device was not restarted
[ "$(count_lines "$T/log.out" "^/esp/$other/log .*MQTT_EVENT_CONNECTED")" -eq 1 ] || fail "$other restarted too"
# log timestamps restart from the reset
ms=$(grep -E "^/esp/$id/log I \([0-9]+\) mqtt: MQTT_EVENT_CONNECTED" "$T/log.out" | tail -n 1 | sed -E 's/.*I \(([0-9]+)\).*/\1/')
[ "$ms" -ge 300 ] && [ "$ms" -lt 30000 ] || fail "ms since boot after restart is $ms"

# daemon restart
stop_daemon
start_daemon "$T/espfleetd.conf" espfleetd2
wait_count 60 "$T/log.out" "^/esp/$id/log I \([0-9]+\) secure_esp: interval=4321 use_url=1 url='https://keep.example/fw.bin'" 2 \
        || fail "settings not kept across a daemon restart"
# broadcast restart reboots both
before=$(count_lines "$T/log.out" 'MQTT_EVENT_CONNECTED')
mqtt_pub "$T/pki" /esp/restart ""
wait_count 30 "$T/log.out" 'MQTT_EVENT_CONNECTED' $((before + 2)) || fail "broadcast restart"
echo "ok: restart keeps settings"
