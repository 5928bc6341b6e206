#!/usr/bin/env bash
# A device whose certificate comes from another CA is refused by the broker;
# the daemon reports each failed attempt, names the broker's TLS alert, and,
# with give_up_after, marks it failed. A device that does not trust the
# broker's certificate names that instead (cert_verify_failed); both reasons
# are counted for Prometheus and the report.
source "$(dirname "$0")/lib.sh"

pki_init "$T/pki"
"$ESPFLEET" pki init "$T/pki-other" >>"$T/pki.log" 2>&1 || fail "second pki init"
provision "$T/good" "$T/pki" 1
provision "$T/rogue" "$T/pki-other" 1
provision "$T/distrust" "$T/pki-other" 1 --first-index 5
# the rogue device trusts the real broker (so only the broker can refuse it)
cp "$T/pki/$PKI_CA" "$T/rogue/ca.crt"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'

write_conf "$T/good.conf" "$T/good" 'device = { boot_time_ms = 100; };'
write_conf "$T/rogue.conf" "$T/rogue" 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };' \
        'reconnect = { backoff_min_ms = 100; backoff_max_ms = 400; give_up_after = 3; };'
write_conf "$T/distrust.conf" "$T/distrust" 'device = { boot_time_ms = 100; };' \
        'reconnect = { backoff_min_ms = 100; backoff_max_ms = 400; give_up_after = 2; };'
start_daemon "$T/good.conf" good
start_daemon "$T/rogue.conf" rogue
start_daemon "$T/distrust.conf" distrust
rogue_id=$(tail -n +2 "$T/rogue/manifest.csv" | cut -d, -f2)
good_id=$(tail -n +2 "$T/good/manifest.csv" | cut -d, -f2)

wait_count 60 "$T/status.out" "^/esp/$good_id/status .*online" 1 || fail "the good device did not come online"
wait_count 60 "$T/rogue.log" "$rogue_id.*Giving up after 3 failed connection attempts" 1 \
        || fail "rogue device was not reported as refused"
grep -qE "$rogue_id.*Connection to localhost:$MQTT_PORT failed \(attempt 1, tls_alert_unknown_ca\): the broker ended the handshake with TLS alert unknown CA" "$T/rogue.log" \
        || fail "no per-attempt failure line naming the broker's TLS alert"
distrust_id=$(tail -n +2 "$T/distrust/manifest.csv" | cut -d, -f2)
wait_count 60 "$T/distrust.log" "$distrust_id.*Giving up after 2 failed connection attempts" 1 \
        || fail "the distrusting device did not give up"
grep -qE "$distrust_id.*failed \(attempt 1, cert_verify_failed\): the broker.s certificate failed verification: [a-z]" "$T/distrust.log" \
        || fail "a broker certificate the device refused is not named as such"
wait_count 10 "$T/rogue.log" "Fleet: online 0/1, connecting 0, failed 1" 1 || fail "summary does not count it failed"
grep -q "^/esp/$rogue_id/" "$T/status.out" && fail "the rogue device got onto the broker"
echo "ok: foreign-CA device refused and reported"
