#!/usr/bin/env bash
# Broker faults (issue #9 §3), against a real mosquitto:
#   - the broker at max_connections: the devices it refuses back off (their
#     attempts are spaced by the backoff, not a busy loop) and name the
#     refusal; once the broker is restarted with room, every device is online;
#   - a frozen broker (SIGSTOP): keepalive finds out (the devices do not wait
#     for TCP to give up), and once it thaws (SIGCONT) every device is back.
source "$(dirname "$0")/lib.sh"
N=6
CAP=3

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
MOSQUITTO_EXTRA_CONF="max_connections $CAP" start_mosquitto "$T/pki"
# mosquitto's config says max_connections -1 first; the later line wins
grep -q "^max_connections $CAP" "$T/mosquitto.conf" || fail "the cap is not in the broker's config"
port=$MQTT_PORT
write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 0; };' \
        'broker = { host = "localhost"; port = '"$port"'; keepalive = 5; };' \
        'reconnect = { backoff_min_ms = 500; backoff_max_ms = 2000; };' 'log = { summary_interval = 1; };'
sed -i '2d' "$T/espfleetd.conf"   # write_conf's broker line: ours sets the keepalive too
start_daemon "$T/espfleetd.conf"
wait_count 30 "$T/espfleetd.log" "Fleet: online $CAP/$N" 1 || fail "the broker's $CAP connections were not taken"
sleep 6
grep -q "Fleet: online $((CAP + 1))/$N" "$T/espfleetd.log" && fail "more than max_connections devices online"
# the refused ones retried, each no faster than its backoff allows: over ~6 s
# with backoff_min 0.5 s (doubling, jittered) a device makes at most ~5 attempts
att=$(count_lines "$T/espfleetd.log" 'Connection to localhost:[0-9]+ failed \(attempt')
[ "$att" -ge $((N - CAP)) ] || fail "the refused devices did not retry ($att failed attempts)"
[ "$att" -le $(((N - CAP) * 12)) ] || fail "$att failed attempts by $((N - CAP)) devices: a reconnect storm"
# the broker lets the TLS handshake finish and then closes: the device says what it saw
grep -E 'Connection to localhost:[0-9]+ failed' "$T/espfleetd.log" | head -n 1 >"$T/refusal.txt"
grep -qE 'failed \(attempt [0-9]+, [a-z_0-9]+\)' "$T/refusal.txt" || fail "the refusal is not named: $(cat "$T/refusal.txt")"

# room again: the same port, no cap
stop_mosquitto
start_mosquitto "$T/pki" "$port"
n0=$(count_lines "$T/espfleetd.log" "Fleet: online $N/$N")
wait_count 60 "$T/espfleetd.log" "Fleet: online $N/$N" $((n0 + 1)) || fail "not every device came online once the broker had room"

# frozen: keepalive 5 s, so within ~1.5 keepalives the devices know
lost0=$(count_lines "$T/espfleetd.log" 'Connection to the broker lost')
kill -STOP "$MQTT_PID"
wait_count 30 "$T/espfleetd.log" 'Connection to the broker lost' $((lost0 + N)) \
        || { kill -CONT "$MQTT_PID"; fail "a frozen broker went unnoticed (keepalive)"; }
kill -CONT "$MQTT_PID"
n1=$(count_lines "$T/espfleetd.log" "Fleet: online $N/$N")
wait_count 90 "$T/espfleetd.log" "Fleet: online $N/$N" $((n1 + 1)) || fail "not every device came back after the thaw"
stop_daemon
echo "ok: refused devices back off and come in when there is room; a frozen broker is found by keepalive"
