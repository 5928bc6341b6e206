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
# The broker admits about CAP: Debian 12's mosquitto 2.0.11 miscounts
# max_connections (a context's close can decrement the listener's count twice;
# fixed in 2.0.12, "Fix max_connections option not being correctly counted"),
# so it has been seen to let CAP + 1 in.  What is ours to test is the rest:
# the devices it turns away keep being turned away, back off, and say why.
online_now() { grep -oE 'Fleet: online [0-9]+/' "$T/espfleetd.log" | tail -n 1 | grep -oE '[0-9]+' || true; }
at_least_cap() { local k; k=$(online_now); [ -n "$k" ] && [ "$k" -ge "$CAP" ]; }
wait_for 30 at_least_cap || fail "the broker's $CAP connections were not taken"
attempts() { count_lines "$T/espfleetd.log" 'Connection to localhost:[0-9]+ failed \(attempt'; }
att0=$(attempts)
sleep 6
K=$(online_now)
[ "$K" -lt "$N" ] || fail "every device online though the broker is capped at $CAP: nothing was refused"
denied=$(count_lines "$T/mosquitto.log" 'denied: max_connections exceeded')
[ "$denied" -ge $((N - K)) ] || fail "only $denied refusals in the broker's log for $((N - K)) devices left out"
log "broker capped at $CAP admitted $K of $N; $denied refusals logged"
# the refused ones retried, each no faster than its backoff allows: in these
# 6 s, with backoff_min 0.5 s (doubling, jittered, up to 2 s), a device makes
# at most ~6 attempts, and at least one
att=$(( $(attempts) - att0 ))
[ "$att" -ge $((N - K)) ] || fail "the refused devices did not retry ($att failed attempts)"
[ "$att" -le $(((N - K) * 12)) ] || fail "$att failed attempts by $((N - K)) devices: a reconnect storm"
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
