#!/usr/bin/env bash
# ACL isolation under the project's own broker config (issue #9 §6):
# use_identity_as_username and `pattern readwrite /esp/%u/#`. Device A,
# connecting with its own certificate and key, can use its own topics (the
# positive control, so that the refusals below cannot pass by accident) but
#   - cannot publish to B's topics (its command topics, its log),
#   - cannot forge B's retained status,
#   - cannot receive B's per-device commands,
# while B, run by espfleetd, gets its commands as before.
# A's key is known because A was provisioned as a replay (--private-key),
# as configure_ds.py does it; B's exists only as DS ciphertext.
source "$(dirname "$0")/lib.sh"

pki_init "$T/pki"
openssl genrsa -out "$T/a.key" 2048 2>/dev/null || fail "openssl genrsa"
chmod 600 "$T/a.key"
provision "$T/fleet" "$T/pki" 1 --private-key "$T/a.key"
provision "$T/fleet" "$T/pki" 2
a=$(sed -n 2p "$T/fleet/manifest.csv" | cut -d, -f2)
b=$(sed -n 3p "$T/fleet/manifest.csv" | cut -d, -f2)
[ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] || fail "two devices expected: '$a' '$b'"
openssl x509 -in "$T/fleet/devices/$a/device.crt" -noout -subject | grep -q "CN *= *$a" || fail "A's certificate CN is not $a"

start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/op.out" '/esp/#'
# B runs; A stays offline in the fleet (its certificate is used by hand below)
write_conf "$T/espfleetd.conf" "$T/fleet" 'first_device = 1;' 'ramp = { rate = 50.0; };' \
        'device = { boot_time_ms = 100; };'
start_daemon "$T/espfleetd.conf"
wait_count 30 "$T/op.out" "^/esp/$b/status .*\"state\":\"online\"" 1 || fail "B is not online"

as_a() {  # as_a mosquitto_pub|mosquitto_sub ARGS…
        local tool=$1; shift
        "$tool" -V mqttv5 -h localhost -p "$MQTT_PORT" --cafile "$T/pki/$PKI_CA" \
                --cert "$T/fleet/devices/$a/device.crt" --key "$T/a.key" "$@"
}

# positive control: A may write its own topics
as_a mosquitto_pub -i "$a-own" -q 1 -t "/esp/$a/log" -m "I (1) acl: own topic" || fail "A cannot publish its own log"
wait_count 10 "$T/op.out" "^/esp/$a/log I \(1\) acl: own topic" 1 || fail "A's own publish did not arrive: the test cannot tell a refusal"

# A subscribes to B's commands, and to its own (the control that the
# subscription works: mosquitto may grant a SUBACK and filter on delivery)
# not through as_a: a function in the background is a subshell, and $!
# would be that subshell, not the client (which then outlived the test)
mosquitto_sub -V mqttv5 -h localhost -p "$MQTT_PORT" --cafile "$T/pki/$PKI_CA" \
        --cert "$T/fleet/devices/$a/device.crt" --key "$T/a.key" \
        -i "$a-spy" -q 1 -v -t "/esp/$b/update/url" -t "/esp/$b/restart" -t "/esp/$a/update/url" \
        >"$T/spy.out" 2>"$T/spy.err" &
_PIDS+=("$!")
sleep 1
# A publishes as if it were B, and as if it commanded B
for t in "/esp/$b/status" "/esp/$b/log" "/esp/$b/update/url" "/esp/$b/restart"; do
        as_a mosquitto_pub -i "$a-forge" -q 1 -t "$t" -m "forged-by-$a" >>"$T/forge.out" 2>&1 || true
done
as_a mosquitto_pub -i "$a-forge" -q 1 -r -t "/esp/$b/status" -m '{"state":"offline","forged":true}' >>"$T/forge.out" 2>&1 || true

# the operator commands B: B takes it, A's subscription does not see it
url="https://ota.example.net/acl-$RANDOM.bin"
mqtt_pub "$T/pki" "/esp/$b/update/url" "$url"
wait_count 20 "$T/espfleetd.log" "$b: Command update/url accepted" 1 || fail "B did not get its command"
sleep 1
grep -q "forged" "$T/op.out" && fail "a forged publish of A reached B's topics: $(grep forged "$T/op.out" | head -n 2)"
grep -q "$url" "$T/spy.out" && fail "A received B's command"
grep -q "forged" "$T/espfleetd.log" && fail "B acted on a command A forged"
mqtt_pub "$T/pki" "/esp/$a/update/url" "$url-for-a"
wait_count 10 "$T/spy.out" "^/esp/$a/update/url $url-for-a" 1 || fail "A's subscriber got nothing at all: the test cannot tell"
grep -q "^/esp/$b/" "$T/spy.out" && fail "A received something on B's topics: $(grep "^/esp/$b/" "$T/spy.out")"

# B's retained status is still B's own: a new subscriber sees online
mosquitto_sub -h localhost -p "$MQTT_PORT" --cafile "$T/pki/$PKI_CA" --cert "$T/pki/$PKI_OPERATOR_CERT" \
        --key "$T/pki/$PKI_OPERATOR_KEY" -C 1 -W 5 -t "/esp/$b/status" >"$T/retained.out" 2>/dev/null || true
grep -q '"state":"online"' "$T/retained.out" || fail "B's retained status was replaced: $(cat "$T/retained.out")"
grep -q "forged" "$T/retained.out" && fail "B's retained status is A's forgery"
stop_daemon
echo "ok: a device cannot publish to, forge or read another device's topics"
