#!/usr/bin/env bash
# The CLI's JSON outputs parse as JSON (strict UTF-8) and say what the device
# holds: `efuse summary --format json` (espefuse's layout), `nvs dump
# --format json` (NVS strings byte for byte as U+0000..U+00FF, blobs as hex)
# --format json`, `partition-table show --format json`, `device list|show
# --format json` and `image info --format json`. No daemon, no broker.
source "$(dirname "$0")/lib.sh"
: "${VECTORS_DIR:=$SOURCE_DIR/../shared/vectors}"

# check_json FILE PYTHON ARGS...: FILE must be UTF-8 JSON; PYTHON then sees it
# as `d`, and ARGS as sys.argv[1:].
check_json() {
        local file=$1 code=$2; shift 2
        python3 -c '
import json, sys
with open(sys.argv[1], "rb") as f:
    raw = f.read()
assert raw.endswith(b"\n"), "no trailing newline"
d = json.loads(raw.decode("utf-8"))
code = sys.argv[2]
sys.argv = sys.argv[2:]
exec(code)
' "$file" "$code" "$@"
}

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" 1
IFS=, read -r _ id mac < <(sed -n 2p "$T/fleet/manifest.csv")
dev="$T/fleet/devices/$id"

log "efuse summary --format json"
"$ESPFLEET" efuse burn "$dev" DIS_DOWNLOAD_MODE 1 >/dev/null || fail "efuse burn"
"$ESPFLEET" efuse summary "$dev" --format json >"$T/efuse.json" || fail "efuse summary --format json"
check_json "$T/efuse.json" '
mac = sys.argv[1]
espefuse_keys = {"name", "value", "readable", "writeable", "description", "category",
                 "block", "word", "pos", "efuse_type", "bit_len"}
assert isinstance(d, dict) and len(d) > 20, d
for name, f in d.items():
    assert f["name"] == name, f
    assert espefuse_keys <= set(f), f
w = d["WR_DIS"]
assert (w["block"], w["word"], w["pos"], w["efuse_type"], w["bit_len"]) == (0, 0, 0, "uint:32", 32), w
assert w["value"] == w["raw_value"] and isinstance(w["value"], int), w
assert d["DIS_DOWNLOAD_MODE"]["value"] is True and d["DIS_DOWNLOAD_MODE"]["efuse_type"] == "bool"
assert d["SECURE_BOOT_EN"]["value"] is True, d["SECURE_BOOT_EN"]
assert d["MAC"]["value"] == mac and d["MAC"]["efuse_type"] == "bytes:6", (d["MAC"], mac)
assert d["KEY_PURPOSE_1"]["value"] == "HMAC_DOWN_DIGITAL_SIGNATURE", d["KEY_PURPOSE_1"]
k = d["BLOCK_KEY1"]
assert k["readable"] is False and k["efuse_type"] == "bytes:32", k
assert set(k["value"].replace(" ", "")) == {"?"}, k
' "$mac" || fail "efuse summary JSON"

# a bare eFuse file of the other chip
head -c 1024 /dev/zero >"$T/blank-s3.efuse"
"$ESPFLEET" efuse summary "$T/blank-s3.efuse" --chip esp32s3 --format json >"$T/efuse-s3.json" \
        || fail "efuse summary --chip esp32s3 --format json"
check_json "$T/efuse-s3.json" '
assert d["MAC"]["value"] == "00:00:00:00:00:00", d["MAC"]
assert d["BLOCK_KEY5"]["readable"] is True and d["BLOCK_KEY5"]["block"] == 9, d["BLOCK_KEY5"]
' || fail "efuse summary JSON of an esp32s3 file"

log "nvs dump --format json"
# bytes that need escaping, a multi-byte UTF-8 character and bytes that are not UTF-8
printf -v odd 'caf\xc3\xa9 "q" \\ /\t\x01\x7f\xff!'
"$ESPFLEET" nvs set "$dev" secure_esp url string "$odd" || fail "nvs set url"
"$ESPFLEET" nvs set "$dev" secure_esp interval u32 4242 || fail "nvs set interval"
"$ESPFLEET" nvs set "$dev" app offset i64 -- -9223372036854775808 || fail "nvs set offset"
"$ESPFLEET" nvs set "$dev" app blob hex2bin 00ff10ab || fail "nvs set blob"
# a negative value without "--" is a value, not options (issue #9 §4)
"$ESPFLEET" nvs set "$dev" app low i16 -32768 || fail "nvs set i16 -32768 without --"
[ "$("$ESPFLEET" nvs get "$dev" app low)" = "-32768" ] || fail "nvs get i16 after a negative set"
"$ESPFLEET" nvs erase "$dev" app low || fail "nvs erase low"
"$ESPFLEET" nvs dump "$dev" --format json >"$T/nvs.json" || fail "nvs dump --format json"
printf '%s' "$odd" >"$T/odd.bin"
check_json "$T/nvs.json" '
odd = open(sys.argv[1], "rb").read()
assert "flash.bin" in d["source"] and d["encrypted"] is False and d["repairs"] == 0, d
assert d["pages"][0]["state"] == "ACTIVE" and d["pages"][0]["version"] == 2, d["pages"][0]
assert all(p["state_raw"].startswith("0x") and len(p["state_raw"]) == 10 for p in d["pages"])
e = {(x["namespace"], x["key"]): x for x in d["entries"]}
url = e[("secure_esp", "url")]
assert url["type"] == "string" and url["size"] == len(odd) + 1, url
assert url["value"].encode("latin-1") == odd, (url["value"], odd)
assert e[("secure_esp", "interval")]["value"] == 4242, e[("secure_esp", "interval")]
assert e[("app", "offset")]["value"] == -2**63, e[("app", "offset")]
b = e[("app", "blob")]
assert (b["type"], b["value"], b["size"]) == ("blob_index", "00ff10ab", 4), b
' "$T/odd.bin" || fail "nvs dump JSON"
# get prints a blob as its JSON string
"$ESPFLEET" nvs get "$dev" app blob >"$T/blob.out" || fail "nvs get blob"
check_json "$T/blob.out" 'assert d == "00ff10ab", d' || fail "nvs get blob: $(cat "$T/blob.out")"

log "partition-table show --format json"
"$ESPFLEET" partition-table show "$dev" --format json >"$T/pt.json" || fail "partition-table show --format json"
check_json "$T/pt.json" '
names = [l.split(",")[0].strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
assert d["offset"] == 0x8000 and d["ota_slots"] == 2, d
# the device flash is 4 MiB; the table ends where its last partition does
assert d["flash_size"] == 4 * 1024 * 1024, d
p = {x["name"]: x for x in d["partitions"]}
assert d["end"] == max(x["offset"] + x["size"] for x in d["partitions"]), d
assert [x["name"] for x in d["partitions"]] == names, (d["partitions"], names)
assert (p["nvs"]["type"], p["nvs"]["subtype"], p["nvs"]["offset"], p["nvs"]["size"]) == ("data", "nvs", 0x9000, 0x6000)
c = p["esp_secure_cert"]
assert (c["type"], c["type_id"], c["encrypted"], c["readonly"]) == (None, 0x3F, True, False), c
assert (p["ota_1"]["subtype"], p["ota_1"]["subtype_id"]) == ("ota_1", 0x11), p["ota_1"]
' "$SOURCE_DIR/etc/partitions.csv" || fail "partition-table JSON of a device"

# gen_esp32part.py's binary of a stock table
"$ESPFLEET" partition-table show "$VECTORS_DIR/partition-table/two_ota.bin" --format json >"$T/two_ota.json" \
        || fail "partition-table show two_ota.bin"
check_json "$T/two_ota.json" '
got = [(x["name"], x["type"], x["subtype"], x["size"]) for x in d["partitions"]]
assert got == [("nvs", "data", "nvs", 0x4000), ("otadata", "data", "ota", 0x2000),
               ("phy_init", "data", "phy", 0x1000), ("factory", "app", "factory", 0x100000),
               ("ota_0", "app", "ota_0", 0x100000), ("ota_1", "app", "ota_1", 0x100000)], got
assert d["partitions"][0]["offset"] == 0x9000 and d["ota_slots"] == 2, d
# a table file knows how much flash it needs, not the size of any flash
assert d["flash_size"] is None and d["end"] == 0x310000, d
' || fail "partition-table JSON of two_ota.bin"

# a name that is not UTF-8 still gives valid JSON, byte for byte
printf 'nvs,data,nvs,0x9000,0x6000,\nn\xc3\xa9,data,phy,0xf000,0x1000,\nb\xe9\xff,data,0x99,0x10000,0x1000,readonly\n' \
        >"$T/names.csv"
"$ESPFLEET" partition-table show "$T/names.csv" --format json >"$T/names.json" || fail "partition-table show names.csv"
check_json "$T/names.json" '
p = d["partitions"]
assert p[1]["name"] == "n\u00e9", p[1]
assert p[2]["name"].encode("latin-1") == b"b\xe9\xff", p[2]
assert (p[2]["subtype"], p[2]["subtype_id"], p[2]["readonly"]) == (None, 0x99, True), p[2]
' || fail "partition-table JSON with a name that is not UTF-8"

# unreadable entries (one flipped data byte): the JSON is still printed and
# valid, and stderr says what went wrong (issue #9 §4: it used to say nothing)
cp "$dev/flash.bin" "$T/corrupt.bin"
python3 -c '
import sys
f = open(sys.argv[1], "r+b"); f.seek(0x9000 + 64 + 24); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0xff]))
' "$T/corrupt.bin"
if "$ESPFLEET" nvs dump "$T/corrupt.bin" --format json >"$T/corrupt.json" 2>"$T/corrupt.err"; then
        fail "a dump with unreadable entries exited 0"
fi
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/corrupt.json" || fail "the JSON of a damaged partition is not valid"
grep -qE "entries unreadable \(the first: ESP_ERR_NVS_[A-Z_]+\)" "$T/corrupt.err" \
        || { cat "$T/corrupt.err" >&2; fail "no message about the unreadable entries"; }


log "device list / device show --format json"
"$ESPFLEET" device list "$T/fleet" --format json >"$T/list.json" || fail "device list --format json"
check_json "$T/list.json" '
d0 = d["devices"][0]
assert len(d["devices"]) == 1 and d["chip"] == "esp32c3", d
assert (d0["index"], d0["id"], d0["mac"], d0["version"], d0["running"], d0["pid"]) == \
       (0, sys.argv[1], sys.argv[2], "1.0.0", False, None), d0
' "$id" "$mac" || fail "device list JSON"
"$ESPFLEET" device show "$T/fleet" "$id" --format json >"$T/show.json" || fail "device show --format json"
check_json "$T/show.json" '
assert d["id"] == sys.argv[1] and d["mac"] == sys.argv[2] and d["index"] == 0, d
assert d["certificate"]["subject"].endswith("CN=" + sys.argv[1]) and d["certificate"]["rsa_bits"] == 2048, d
e = d["efuse"]
assert (e["ds_key_purpose"], e["ds_key_readable"], e["secure_boot_enabled"]) == \
       ("HMAC_DOWN_DIGITAL_SIGNATURE", False, True), e
# where the key is, never what it is
assert not any(len(str(v)) >= 64 for v in e.values()), e
f = d["firmware"]
assert (f["boot_slot"], f["version"], f["error"]) == (0, "1.0.0", None), f
s = d["settings"]
# set by the nvs steps above; the url holds every odd byte, exactly
assert s["interval"] == 4242 and s["url"].encode("latin-1").startswith(b"caf\xc3\xa9"), s
' "$id" "$mac" || fail "device show JSON"
# text and JSON are the same command: --help works on both, as on every verb
"$ESPFLEET" device list --help >/dev/null || fail "device list --help"
"$ESPFLEET" device show --help >/dev/null || fail "device show --help"
if "$ESPFLEET" device show "$T/fleet" "$id" --format yaml >/dev/null 2>"$T/fmt.err"; then
        fail "device show --format yaml was accepted"
fi
grep -q "yaml" "$T/fmt.err" || fail "an unknown --format is not named: $(cat "$T/fmt.err")"

log "image info --format json"
"$ESPFLEET" image build --version 2.3.4 --secure-version 1 -o "$T/fw.bin" >/dev/null || fail "image build"
"$ESPFLEET" image sign --key "$T/pki/secure_boot_signing_key.pem" "$T/fw.bin" -o "$T/fws.bin" >/dev/null || fail "image sign"
"$ESPFLEET" image info "$T/fws.bin" --format json >"$T/info.json" || fail "image info --format json"
check_json "$T/info.json" '
assert d["valid"] and d["error"] is None, d
assert (d["header"]["chip"], d["header"]["hash_appended"]) == ("esp32c3", True), d["header"]
a = d["app_desc"]
assert (a["version"], a["secure_version"], a["idf_ver"]) == ("2.3.4", 1, "v5.2.1"), a
b = d["signature"]["blocks"]
assert len(b) == 1 and b[0]["valid"] and b[0]["key_type"] == "rsa3072" and b[0]["version"] == 2, b
assert d["signature"]["offset"] % 4096 == 0 and d["signature"]["offset"] >= d["image"]["length"], d
' || fail "image info JSON of a signed image"
head -c 1000 "$T/fws.bin" >"$T/short.bin"
if "$ESPFLEET" image info "$T/short.bin" --format json >"$T/short.json"; then
        fail "image info of a truncated image exited 0"
fi
check_json "$T/short.json" '
assert d["valid"] is False and "truncated" in d["error"] and d["image"] is None, d
assert d["app_desc"]["version"] == "2.3.4", d
' || fail "image info JSON of a truncated image"

echo "ok: efuse, nvs, partition-table, device and image JSON parse and hold the device's values"
