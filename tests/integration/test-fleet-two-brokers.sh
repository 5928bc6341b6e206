#!/usr/bin/env bash
# broker.hosts (issue #16, a broker cluster): devices spread over two real
# mosquitto instances by manifest index (device INDEX on entry INDEX mod 2),
# each connection checked against its own broker's name (one by name, one by
# address: the broker certificate carries both), and each device takes its
# commands from the broker it is on.
source "$(dirname "$0")/lib.sh"
N=6

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
P1=$MQTT_PORT
mqtt_sub_bg "$T/pki" "$T/status-1.out" '/esp/+/status'
mv "$T/mosquitto.conf" "$T/mosquitto-1.conf"
start_mosquitto "$T/pki"
P2=$MQTT_PORT
mqtt_sub_bg "$T/pki" "$T/status-2.out" '/esp/+/status'

write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };' \
        "broker = { hosts = [ \"localhost:$P1\", \"127.0.0.1:$P2\" ]; };"
sed -i '2d' "$T/espfleetd.conf"   # write_conf's own broker line: libconfig refuses a group twice
"$ESPFLEETD" -c "$T/espfleetd.conf" --check-config >/dev/null || fail "the config is refused"
start_daemon "$T/espfleetd.conf"
wait_count 30 "$T/status-1.out" '"state":"online"' $((N / 2)) || fail "broker 1 has fewer than $((N / 2)) devices"
wait_count 30 "$T/status-2.out" '"state":"online"' $((N / 2)) || fail "broker 2 has fewer than $((N / 2)) devices"

# device INDEX is on broker INDEX mod 2, and on that one only
while IFS=, read -r idx id _; do
        [ "$idx" = index ] && continue
        on=1 off=2
        [ $((idx % 2)) -eq 1 ] && on=2 off=1
        grep -q "^/esp/$id/status .*\"state\":\"online\"" "$T/status-$on.out" || fail "$id (index $idx) is not on broker $on"
        grep -q "^/esp/$id/" "$T/status-$off.out" && fail "$id (index $idx) is on broker $off too"
done <"$T/fleet/manifest.csv"

# a command on broker 2 reaches a device of broker 2
id=$(sed -n 3p "$T/fleet/manifest.csv" | cut -d, -f2)
MQTT_PORT=$P2 mqtt_pub "$T/pki" "/esp/$id/update/interval" 4321
wait_count 20 "$T/espfleetd.log" "$id: Command .*interval.* accepted" 1 || fail "$id did not take a command from its broker"

# a bad entry is named
write_conf "$T/bad.conf" "$T/fleet" 'broker = { hosts = [ "localhost:0" ]; };'
sed -i '2d' "$T/bad.conf"
if "$ESPFLEETD" -c "$T/bad.conf" --check-config >"$T/bad.out" 2>&1; then fail "port 0 accepted"; fi
grep -q "broker.hosts.*localhost:0.*1 to 65535" "$T/bad.out" || fail "unclear error: $(cat "$T/bad.out")"
stop_daemon
echo "ok: devices spread over two brokers by index, each on its own name"
