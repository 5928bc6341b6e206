#!/usr/bin/env bash
# A device whose certificate comes from another CA is refused by the broker;
# the daemon reports each failed attempt and, with give_up_after, marks it failed.
source "$(dirname "$0")/lib.sh"

pki_init "$T/pki"
"$ESPFLEET" pki init "$T/pki-other" >>"$T/pki.log" 2>&1 || fail "second pki init"
provision "$T/good" "$T/pki" 1
provision "$T/rogue" "$T/pki-other" 1
# the rogue device trusts the real broker (so only the broker can refuse it)
cp "$T/pki/$PKI_CA" "$T/rogue/ca.crt"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'

write_conf "$T/good.conf" "$T/good" 'device = { boot_time_ms = 100; };'
write_conf "$T/rogue.conf" "$T/rogue" 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };' \
        'reconnect = { backoff_min_ms = 100; backoff_max_ms = 400; give_up_after = 3; };'
start_daemon "$T/good.conf" good
start_daemon "$T/rogue.conf" rogue
rogue_id=$(tail -n +2 "$T/rogue/manifest.csv" | cut -d, -f2)
good_id=$(tail -n +2 "$T/good/manifest.csv" | cut -d, -f2)

wait_count 60 "$T/status.out" "^/esp/$good_id/status .*online" 1 || fail "the good device did not come online"
wait_count 60 "$T/rogue.log" "$rogue_id.*Giving up after 3 failed connection attempts" 1 \
        || fail "rogue device was not reported as refused"
grep -qE "$rogue_id.*Connection to localhost:$MQTT_PORT failed \(attempt 1\)" "$T/rogue.log" \
        || fail "no per-attempt failure line"
wait_count 10 "$T/rogue.log" "Fleet: online 0/1, connecting 0, failed 1" 1 || fail "summary does not count it failed"
grep -q "^/esp/$rogue_id/" "$T/status.out" && fail "the rogue device got onto the broker"
echo "ok: foreign-CA device refused and reported"
