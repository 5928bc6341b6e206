#!/bin/bash
# espfleet provision --key-pool (issue #16 item 4): K RSA keys shared by the
# fleet, device INDEX on key INDEX mod K; MAC, id, certificate (CN = id, own
# serial), HMAC key and DS ciphertext stay per device; no private key in the
# fleet directory; every device loads and signs through its DS.
set -euo pipefail
: "${ESPFLEET:?ESPFLEET must point at the espfleet binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/espfleet-pool.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }
N=200
K=4

"$ESPFLEET" pki init "$T/pki" >/dev/null
log "provision $N devices with --key-pool $K"
"$ESPFLEET" provision "$T/fleet" --pki "$T/pki" --count $N --key-pool $K --jobs 2 >"$T/prov.out" 2>"$T/prov.err"
grep -q "$N new devices" "$T/prov.out" || { cat "$T/prov.out" "$T/prov.err"; fail "provision did not report $N new devices"; }
# not a TTY: no progress bar
[ ! -s "$T/prov.err" ] || { cat "$T/prov.err"; fail "provision wrote to stderr without a TTY"; }
F=$T/fleet
tail -n +2 "$F/manifest.csv" >"$T/devices.csv"
[ "$(wc -l <"$T/devices.csv")" = $N ] || fail "manifest does not list $N devices"
[ "$(cut -d, -f1 "$T/devices.csv" | sort -un | wc -l)" = $N ] || fail "indexes are not distinct"
[ "$(cut -d, -f2 "$T/devices.csv" | sort -u | wc -l)" = $N ] || fail "ids are not distinct"
[ "$(cut -d, -f3 "$T/devices.csv" | sort -u | wc -l)" = $N ] || fail "MACs are not distinct"
[ ! -e "$F/provision.pending" ] || fail "a finished run left provision.pending"
[ -z "$(find "$F/devices" -maxdepth 1 -name '*.tmp')" ] || fail "a finished run left .tmp dirs"
[ "$(find "$F/devices" -mindepth 1 -maxdepth 1 | wc -l)" = $N ] || fail "devices/ holds other than $N dirs"

log "per device: certificate, serial, public key, HMAC key, DS_DATA"
# One python pass over all devices (openssl per device would take minutes):
# CN = id and issued by the fleet CA (checked with openssl below for a
# sample), serial, SHA-256 of the public key, BLOCK_KEY1 (the DS HMAC key,
# eFuse file offset 144) and the DS_DATA TLV (type 3) of esp_secure_cert.
while IFS=, read -r idx id _; do
        d=$F/devices/$id
        openssl x509 -in "$d/device.crt" -noout -serial -subject -pubkey >"$T/x509.$idx"
done <"$T/devices.csv"
python3 - "$F" "$T" <<'PY' >"$T/table"
import hashlib, struct, sys
fleet, tmp = sys.argv[1], sys.argv[2]
for line in open(fleet + "/manifest.csv").read().splitlines()[1:]:
    idx, dev, mac = line.split(",")
    x = open(f"{tmp}/x509.{idx}").read()
    serial = [l for l in x.splitlines() if l.startswith("serial=")][0]
    subject = [l for l in x.splitlines() if l.startswith("subject=")][0]
    pub = hashlib.sha256(x[x.index("-----BEGIN PUBLIC KEY"):].encode()).hexdigest()[:16]
    efuse = open(f"{fleet}/devices/{dev}/efuse.bin", "rb").read()
    hmac = efuse[144:176].hex()
    with open(f"{fleet}/devices/{dev}/flash.bin", "rb") as f:
        f.seek(0x12000)
        part = f.read(0x2000)
    pos, ds = 0, None
    while pos + 12 <= len(part) and struct.unpack_from("<I", part, pos)[0] == 0xBA5EBA11:
        typ, length = part[pos + 8], struct.unpack_from("<H", part, pos + 10)[0]
        if typ == 3:
            ds = hashlib.sha256(part[pos + 12:pos + 12 + length]).hexdigest()[:16]
        pos += 12 + (length + 15) // 16 * 16 + 4
    cn = subject.split("CN = ")[-1].strip() if "CN = " in subject else subject.split("CN=")[-1].strip()
    print(idx, dev, cn, serial, pub, hmac, ds)
PY
[ "$(wc -l <"$T/table")" = $N ] || fail "the table has $(wc -l <"$T/table") rows"
awk '$2 != $3 { print "device " $2 " has CN " $3; bad = 1 } END { exit bad }' "$T/table" || fail "a certificate CN is not its id"
awk '$7 == "None" { print $2; bad = 1 } END { exit bad }' "$T/table" || fail "a device has no DS_DATA"
[ "$(cut -d' ' -f4 "$T/table" | sort -u | wc -l)" = $N ] || fail "certificate serials are not distinct"
[ "$(cut -d' ' -f6 "$T/table" | sort -u | wc -l)" = $N ] || fail "HMAC keys are not distinct"
[ "$(cut -d' ' -f7 "$T/table" | sort -u | wc -l)" = $N ] || fail "DS ciphertexts are not distinct"
[ "$(cut -d' ' -f5 "$T/table" | sort -u | wc -l)" = $K ] || fail "not exactly $K distinct public keys"
# INDEX mod K picks the key: one key per residue
[ "$(awk -v k=$K '{ print $1 % k, $5 }' "$T/table" | sort -u | wc -l)" = $K ] || fail "devices of one residue mod $K differ in key"
for idx in 0 1 57 199; do
        id=$(awk -F, -v i=$idx '$1 == i { print $2 }' "$T/devices.csv")
        openssl verify -CAfile "$T/pki/ca.crt" "$F/devices/$id/device.crt" >/dev/null || fail "$id cert does not verify"
done

log "devices load: device list, device show"
"$ESPFLEET" device list "$F" >"$T/list"
[ "$(grep -c ' esp-' "$T/list")" = $N ] || fail "device list does not show $N devices"
for idx in 0 3 4 198; do
        id=$(awk -F, -v i=$idx '$1 == i { print $2 }' "$T/devices.csv")
        "$ESPFLEET" device show "$F" "$id" >"$T/show" || fail "device show $id failed"
        grep -q "private key only as DS ciphertext" "$T/show" || { cat "$T/show"; fail "device show $id: no DS key"; }
        grep -q "read-protected" "$T/show" || fail "device show $id: DS key not read-protected"
done

log "no private key in the fleet directory"
if grep -rlaF -- "PRIVATE KEY-----" "$F" >"$T/pem"; then cat "$T/pem"; fail "a PEM private key in the fleet dir"; fi

log "--key-pool with a replay is refused; growing the fleet makes a new pool for the new devices"
if "$ESPFLEET" provision "$T/r" --pki "$T/pki" --count 1 --key-pool 2 --private-key "$T/pki/operator.key" >"$T/out" 2>&1; then
        fail "--key-pool with --private-key succeeded"
fi
grep -q -- "--key-pool" "$T/out" || { cat "$T/out"; fail "the refusal does not name --key-pool"; }
"$ESPFLEET" provision "$F" --pki "$T/pki" --count $((N + 8)) --key-pool 2 --jobs 2 >/dev/null
[ "$(tail -n +2 "$F/manifest.csv" | wc -l)" = $((N + 8)) ] || fail "growing to $((N + 8)) devices"
[ "$(head -n $((N + 1)) "$F/manifest.csv" | tail -n +2)" = "$(cat "$T/devices.csv")" ] || fail "growing changed existing devices"
echo "ok: $N devices on $K pool keys, unique per-device identity, HMAC key and DS data"
