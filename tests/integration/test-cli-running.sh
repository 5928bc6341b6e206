#!/usr/bin/env bash
# The CLI and a running daemon: settings set over MQTT land in the device's
# real NVS partition (namespace secure_esp), readable with `espfleet nvs`
# once the daemon stops; while it runs, commands that would change a device
# (nvs set/erase, efuse burn) are refused with a clear message and change
# nothing; read-protected DS keys never show.
source "$(dirname "$0")/lib.sh"
N=2

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'
write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };'
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/status.out" '"state":"online"' "$N" || fail "devices not online"

id=$(sed -n 2p "$T/fleet/manifest.csv" | cut -d, -f2)
dev="$T/fleet/devices/$id"
url="https://ota.example.net:8070/fw-$RANDOM.bin"
mqtt_pub "$T/pki" "/esp/$id/update/url" "$url"
mqtt_pub "$T/pki" "/esp/$id/update/interval" 4242
wait_count 20 "$T/espfleetd.log" "$id: Command .*interval.* accepted" 1 || fail "interval not accepted"

before=$(sha256sum <"$dev/flash.bin")
efuse_before=$(sha256sum <"$dev/efuse.bin")
if "$ESPFLEET" nvs set "$dev" secure_esp use_url u8 1 >"$T/refused.out" 2>&1; then
        fail "nvs set on a running device was not refused"
fi
grep -qE "$id.*(running|in use)" "$T/refused.out" || fail "unclear refusal: $(cat "$T/refused.out")"
if "$ESPFLEET" nvs erase "$dev" secure_esp url >>"$T/refused.out" 2>&1; then
        fail "nvs erase on a running device was not refused"
fi
if "$ESPFLEET" efuse burn "$dev" DIS_DOWNLOAD_MODE 1 >>"$T/refused.out" 2>&1; then
        fail "efuse burn on a running device was not refused"
fi
[ "$(sha256sum <"$dev/flash.bin")" = "$before" ] || fail "a refused command changed flash.bin"
[ "$(sha256sum <"$dev/efuse.bin")" = "$efuse_before" ] || fail "a refused command changed efuse.bin"

# reading is safe while the daemon runs (a snapshot), as device show is
"$ESPFLEET" nvs get "$dev" secure_esp url >"$T/url-live.out" 2>&1 || fail "nvs get on a running device: $(cat "$T/url-live.out")"
grep -qxF "$url" "$T/url-live.out" || fail "nvs get on a running device: '$(cat "$T/url-live.out")', expected '$url'"
"$ESPFLEET" nvs dump "$dev" >"$T/dump-live.txt" 2>&1 || fail "nvs dump on a running device: $(cat "$T/dump-live.txt")"
grep -qF "$url" "$T/dump-live.txt" || fail "nvs dump of a running device lacks the url"
"$ESPFLEET" device list "$T/fleet" --format json >"$T/list-live.json" || fail "device list --format json"
python3 - "$T/list-live.json" "$id" <<'PY' || fail "device list JSON of a running fleet"
import json, sys
d = json.load(open(sys.argv[1]))
dev = {x["id"]: x for x in d["devices"]}
assert len(dev) == 2 and dev[sys.argv[2]]["running"] is True and dev[sys.argv[2]]["pid"] > 0, d
assert dev[sys.argv[2]]["version"] == "1.0.0", d
PY
[ "$(sha256sum <"$dev/flash.bin")" = "$before" ] || fail "reading a running device changed flash.bin"

stop_daemon
# the settings live in the device's NVS partition, as ESP-IDF stores them
"$ESPFLEET" nvs get "$dev" secure_esp url >"$T/url.out" || fail "nvs get url"
grep -qxF "$url" "$T/url.out" || fail "NVS url is '$(cat "$T/url.out")', expected '$url'"
"$ESPFLEET" nvs get "$dev" secure_esp interval >"$T/interval.out" || fail "nvs get interval"
grep -qx 4242 "$T/interval.out" || fail "NVS interval is '$(cat "$T/interval.out")'"
"$ESPFLEET" nvs dump "$dev" --format json >"$T/dump.json" || fail "nvs dump"
python3 - "$T/dump.json" "$url" <<'PY' || fail "nvs dump json does not hold the settings"
import json, sys
d = json.load(open(sys.argv[1]))
text = json.dumps(d)
assert sys.argv[2] in text and "secure_esp" in text, text[:400]
PY

# stopped: the same commands now work
"$ESPFLEET" nvs set "$dev" secure_esp use_url u8 1 || fail "nvs set on a stopped device"
"$ESPFLEET" nvs get "$dev" secure_esp use_url | grep -qx 1 || fail "use_url not set"

# the DS key block is read-protected: never shown, in text or JSON
"$ESPFLEET" efuse summary "$dev" >"$T/efuse.txt" || fail "efuse summary"
"$ESPFLEET" efuse summary "$dev" --format json >"$T/efuse.json" || fail "efuse summary json"
python3 - "$T/efuse.json" <<'PY' || fail "a read-protected key is visible in the JSON summary"
import json, sys
fields = json.load(open(sys.argv[1]))
if isinstance(fields, dict):
    fields = list(fields.values())
ds = [f for f in fields if str(f.get("name", "")).startswith("BLOCK_KEY") and not f.get("readable", True)]
assert ds, "no read-protected key block in the summary"
for f in ds:
    v = str(f.get("value", ""))
    assert set(v.replace(" ", "").replace("?", "")) <= set("0"), f
PY
grep -q "?" "$T/efuse.txt" || fail "the text summary does not mark the hidden key with ?"

# the daemon comes back with the settings changed offline
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/status.out" '"state":"online"' $((N * 2)) || fail "devices not back online"
echo "ok: NVS settings readable offline, running devices protected, hidden keys hidden"
