#!/usr/bin/env bash
# The seed's shared log topic (device.log_topic = "/esp/log"): lines from
# different devices can be told apart, by an opt-in "[esp-xxxxxx] " prefix
# (device.log_id_prefix) and, under MQTT 5, by the user property device_id
# on every publish. Telemetry carries a per-boot sequence number and a time
# stamp, so a subscriber can count losses and measure latency.
source "$(dirname "$0")/lib.sh"
N=2

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mapfile -t ids < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)

sub_v5() {
        local out=$1; shift
        mosquitto_sub -V mqttv5 -h localhost -p "$MQTT_PORT" --cafile "$T/pki/$PKI_CA" \
                --cert "$T/pki/$PKI_OPERATOR_CERT" --key "$T/pki/$PKI_OPERATOR_KEY" \
                -F '%t|%P|%p' "$@" >"$out" 2>>"$T/mosquitto_sub.log" &
        _PIDS+=("$!")
        sleep 0.5
}
sub_v5 "$T/log.out" -t /esp/log
sub_v5 "$T/tele.out" -t '/esp/+/telemetry'

write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 50.0; };' \
        'broker = { host = "localhost"; port = '"$MQTT_PORT"'; protocol = "mqttv5"; };' \
        'device = { boot_time_ms = 100; log_topic = "/esp/log"; log_id_prefix = true; };' \
        'telemetry = { enabled = true; rate = 10.0; };'
# write_conf's own broker line (line 2) gives way to ours: libconfig refuses a group twice
sed -i '2d' "$T/espfleetd.conf"
start_daemon "$T/espfleetd.conf"
for id in "${ids[@]}"; do
        wait_count 30 "$T/log.out" "^/esp/log\|device_id:$id\|\[$id\] I \([0-9]+\) " 1 \
                || fail "no prefixed line with the user property from $id: $(head -n 5 "$T/log.out")"
done
# every line on the shared topic says who sent it, in both ways, and they agree
bad=$(grep -vcE '^/esp/log\|device_id:(esp-[0-9a-f]{6})\|\[\1\] [EWIDV] \([0-9]+\) [^:]+: ' "$T/log.out" || true)
[ "$bad" -eq 0 ] || fail "$bad lines on /esp/log without a matching id: $(grep -vE '\|\[esp-' "$T/log.out" | head -n 3)"

for id in "${ids[@]}"; do
        wait_count 30 "$T/tele.out" "^/esp/$id/telemetry\|" 20 || fail "too few readings from $id"
done
stop_daemon
python3 - "$T/tele.out" "${ids[@]}" <<'PY' || fail "telemetry seq/ts"
import json, sys, time
by = {}
for line in open(sys.argv[1]):
    topic, props, payload = line.rstrip("\n").split("|", 2)
    dev = topic.split("/")[2]
    assert props == "device_id:" + dev, line
    d = json.loads(payload)
    by.setdefault(dev, []).append(d)
assert sorted(by) == sorted(sys.argv[2:]), by.keys()
now_ms = time.time() * 1000
for dev, rs in by.items():
    seq = [r["seq"] for r in rs]
    # one boot, nothing lost on loopback at QoS 0..1: 0, 1, 2, … in order
    assert seq == list(range(len(seq))), (dev, seq[:20])
    ts = [r["ts"] for r in rs]
    assert ts == sorted(ts) and now_ms - 600000 < ts[0] <= now_ms, (dev, ts[:5])
    # ts (sent) is not before due (µs)
    assert all(r["ts"] * 1000 >= r["due"] - 1000 for r in rs), rs[:3]
PY
echo "ok: a shared log topic tells devices apart; telemetry carries seq and ts"
