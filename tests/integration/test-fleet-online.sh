#!/usr/bin/env bash
# N devices come online, each with its own identity (certificate CN = device
# id = MQTT user name), and the daemon reports READY-style summary lines.
source "$(dirname "$0")/lib.sh"
N=5

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'
write_conf "$T/espfleetd.conf" "$T/fleet" \
        'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };'
start_daemon "$T/espfleetd.conf"

wait_count 60 "$T/status.out" '"state":"online"' "$N" || fail "not every device published its online status"
wait_count 30 "$T/espfleetd.log" "Fleet: online $N/$N" 1 || fail "summary never showed $N/$N online"

ids=$(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2 | sort)
[ "$(echo "$ids" | wc -l)" -eq "$N" ] || fail "manifest does not list $N devices"
for id in $ids; do
        grep -q "^/esp/$id/status .*\"state\":\"online\"" "$T/status.out" || fail "$id: no online status"
        # the broker saw the device's own certificate: user name = CN = id
        grep -q "u'$id'" "$T/mosquitto.log" || fail "$id: broker did not see its certificate identity"
done
distinct=$(grep '"state":"online"' "$T/status.out" | cut -d' ' -f1 | sort -u | wc -l)
[ "$distinct" -eq "$N" ] || fail "expected $N distinct device topics, got $distinct"

stop_daemon
grep -q "All workers stopped" "$T/espfleetd.log" || fail "no clean shutdown"
# a clean shutdown publishes offline before DISCONNECT
wait_count 10 "$T/status.out" '"state":"offline"' "$N" || fail "devices did not report offline on shutdown"
echo "ok: $N devices online with distinct identities"
