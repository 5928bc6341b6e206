#!/bin/bash
# espfleet pki init + provision (issues #2 §2, #3, #4, #5): identities, file
# modes, eFuse contents, idempotent re-runs, --first-index, replaying a real
# device, and clear errors for broken fleet directories.
set -euo pipefail
: "${ESPFLEET:?ESPFLEET must point at the espfleet binary}"
: "${SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${VECTORS_DIR:=$SOURCE_DIR/../shared/vectors}"
T=$(mktemp -d "${TMPDIR:-/tmp}/espfleet-prov.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }
mode() { stat -c %a "$1"; }

# expect_fail NEEDLE CMD...: CMD must fail and say NEEDLE.
expect_fail() {
        local needle=$1; shift
        if "$@" >"$T/out" 2>&1; then fail "succeeded: $*"; fi
        grep -qF -- "$needle" "$T/out" || { cat "$T/out" >&2; fail "'$*' did not say '$needle'"; }
}

PKI=$T/pki
F=$T/fleet

log "pki init"
"$ESPFLEET" pki init "$PKI" --host fleet.example --host 10.1.2.3 >"$T/pki.out"
for k in ca.key broker.key ota.key operator.key secure_boot_signing_key.pem; do
        [ "$(mode "$PKI/$k")" = 600 ] || fail "$k has mode $(mode "$PKI/$k")"
        grep -q "$k" "$T/pki.out" || fail "pki init did not print $k"
done
for c in ca.crt broker.crt ota.crt operator.crt secure_boot_pubkey.pem; do
        [ "$(mode "$PKI/$c")" = 644 ] || fail "$c has mode $(mode "$PKI/$c")"
done
openssl verify -CAfile "$PKI/ca.crt" "$PKI/broker.crt" "$PKI/ota.crt" "$PKI/operator.crt" >/dev/null
openssl x509 -in "$PKI/broker.crt" -noout -ext subjectAltName >"$T/san"
for h in DNS:localhost "IP Address:127.0.0.1" DNS:fleet.example "IP Address:10.1.2.3"; do
        grep -qF "$h" "$T/san" || fail "broker cert lacks SAN $h"
done
openssl x509 -in "$PKI/broker.crt" -noout -ext extendedKeyUsage | grep -q "Server Authentication"
openssl x509 -in "$PKI/operator.crt" -noout -ext extendedKeyUsage | grep -q "Client Authentication"
openssl x509 -in "$PKI/operator.crt" -noout -subject | grep -q "CN = operator"
openssl x509 -in "$PKI/ca.crt" -noout -text | grep -q "prime256v1"
openssl pkey -in "$PKI/secure_boot_signing_key.pem" -noout -text | grep -q "3072 bit"
expect_fail "refusing to overwrite" "$ESPFLEET" pki init "$PKI"
cp "$PKI/ca.crt" "$T/ca.before"
expect_fail "not a DNS name" "$ESPFLEET" pki init "$T/pki-bad" --host 'a,b'

log "provision 8 devices"
"$ESPFLEET" provision "$F" --pki "$PKI" --count 8 --jobs 2 >"$T/prov.out"
grep -q "8 new devices" "$T/prov.out" || { cat "$T/prov.out"; fail "provision did not report 8 new devices"; }
[ "$(head -n1 "$F/manifest.csv")" = "index,id,mac" ] || fail "manifest header"
[ "$(tail -n +2 "$F/manifest.csv" | wc -l)" = 8 ] || fail "manifest does not list 8 devices"
[ "$(tail -n +2 "$F/manifest.csv" | cut -d, -f2 | sort -u | wc -l)" = 8 ] || fail "device ids are not distinct"
[ "$(tail -n +2 "$F/manifest.csv" | cut -d, -f3 | sort -u | wc -l)" = 8 ] || fail "MACs are not distinct"
[ "$(tail -n +2 "$F/manifest.csv" | cut -d, -f1 | tr '\n' ' ')" = "0 1 2 3 4 5 6 7 " ] || fail "indexes are not 0..7"
cmp -s "$F/ca.crt" "$PKI/ca.crt" || fail "fleet ca.crt is not the PKI's"
grep -q "^format = 1;" "$F/fleet.conf" || fail "fleet.conf has no format = 1"

tail -n +2 "$F/manifest.csv" | while IFS=, read -r idx id mac; do
        d=$F/devices/$id
        # id = esp- + last three MAC bytes; locally administered, unicast
        [ "$id" = "esp-$(echo "$mac" | cut -d: -f4-6 | tr -d :)" ] || fail "$id does not match $mac"
        first=$((16#${mac%%:*}))
        [ $((first & 2)) = 2 ] && [ $((first & 1)) = 0 ] || fail "$mac is not locally administered unicast"
        [ "$(mode "$d/efuse.bin")" = 600 ] || fail "$id efuse.bin mode $(mode "$d/efuse.bin")"
        [ "$(mode "$d/flash.bin")" = 600 ] || fail "$id flash.bin mode $(mode "$d/flash.bin")"
        [ "$(stat -c %s "$d/efuse.bin")" = 1024 ] || fail "$id efuse.bin is not 1024 bytes"
        [ "$(stat -c %s "$d/flash.bin")" = 4194304 ] || fail "$id flash.bin is not 4 MiB"
        # sparse: only the written sectors take disk
        [ "$(du -k "$d/flash.bin" | cut -f1)" -lt 1024 ] || fail "$id flash.bin is not sparse"
        # QEMU eFuse file: BLOCK1 starts at byte 24, MAC stored byte-reversed
        got=$(od -An -tx1 -j24 -N6 "$d/efuse.bin" | tr -d ' \n')
        want=$(echo "$mac" | tr ':' '\n' | tac | tr -d '\n')
        [ "$got" = "$want" ] || fail "$id eFuse BLOCK1 holds $got, want $want"
        # the certificate: CN = id, clientAuth, from the fleet CA
        openssl verify -CAfile "$PKI/ca.crt" "$d/device.crt" >/dev/null || fail "$id cert does not verify"
        openssl x509 -in "$d/device.crt" -noout -subject | grep -q "CN = $id$" || fail "$id cert CN"
        openssl x509 -in "$d/device.crt" -noout -text | grep -q "Public-Key: (2048 bit)" || fail "$id key size"
        # the same certificate sits in the esp_secure_cert partition (0x12000)
        openssl x509 -in "$d/device.crt" -outform PEM | head -n2 | tail -n1 >"$T/line"
        # (to a file first: `dd | grep -q` under pipefail fails whenever grep exits before dd)
        dd if="$d/flash.bin" of="$T/secure_cert.bin" bs=4096 skip=$((0x12000 / 4096)) count=2 status=none
        grep -aqF -f "$T/line" "$T/secure_cert.bin" || fail "$id esp_secure_cert does not hold its certificate"
        # BLOCK_KEY1 (eFuse block 5, file offset 24+24+3*32) holds the DS HMAC
        # key: QEMU's file keeps the real value, only software reads are hidden.
        key=$(od -An -tx1 -j$((48 + 3 * 32)) -N32 "$d/efuse.bin" | tr -d ' \n')
        [ "$key" != "$(printf '0%.0s' {1..64})" ] || fail "$id has no HMAC key in BLOCK_KEY1"
done
ids_before=$(cat "$F/manifest.csv")

log "HMAC keys differ between devices"
[ "$(for id in $(tail -n +2 "$F/manifest.csv" | cut -d, -f2); do od -An -tx1 -j144 -N32 "$F/devices/$id/efuse.bin" | tr -d ' \n'; echo; done | sort -u | wc -l)" = 8 ] \
        || fail "two devices share an HMAC key"

log "device list / show"
"$ESPFLEET" device list "$F" >"$T/list"
[ "$(grep -c ' esp-' "$T/list")" = 8 ] || { cat "$T/list"; fail "device list does not show 8 devices"; }
grep -q "1.0.0 *stopped" "$T/list" || { cat "$T/list"; fail "device list lacks version/state"; }
id0=$(sed -n 2p "$F/manifest.csv" | cut -d, -f2)
"$ESPFLEET" device show "$F" "$id0" >"$T/show"
grep -q "CN *= *$id0\|CN=$id0" "$T/show" || { cat "$T/show"; fail "device show lacks the certificate"; }
grep -q "read-protected" "$T/show" || fail "device show: DS key not read-protected"
grep -q "SECURE_BOOT_EN *True" "$T/show" || fail "device show: secure boot not enabled"
grep -q "ota_0, ESP_OTA_IMG_VALID" "$T/show" || fail "device show: not booting ota_0"
expect_fail "no device 'esp-zzzzzz'" "$ESPFLEET" device show "$F" esp-zzzzzz

log "re-running keeps the fleet"
"$ESPFLEET" provision "$F" --pki "$PKI" --count 8 >"$T/prov2.out"
grep -q " 0 new devices" "$T/prov2.out" || { cat "$T/prov2.out"; fail "re-run created devices"; }
[ "$(cat "$F/manifest.csv")" = "$ids_before" ] || fail "re-run changed the manifest"
"$ESPFLEET" provision "$F" --pki "$PKI" --count 10 --jobs 2 >/dev/null
[ "$(head -n 9 "$F/manifest.csv")" = "$ids_before" ] || fail "growing the fleet changed existing devices"
[ "$(tail -n +2 "$F/manifest.csv" | wc -l)" = 10 ] || fail "growing to 10 devices"

log "--first-index"
"$ESPFLEET" provision "$F" --pki "$PKI" --count 2 --first-index 100 --jobs 1 >/dev/null
tail -n 2 "$F/manifest.csv" | cut -d, -f1 | tr '\n' ' ' | grep -qx "100 101 " || fail "--first-index 100 not honoured"
[ "$(tail -n +2 "$F/manifest.csv" | cut -d, -f2 | sort -u | wc -l)" = 12 ] || fail "ids not distinct after growth"

log "a fleet stays on its PKI and settings"
"$ESPFLEET" pki init "$T/pki2" >/dev/null
expect_fail "another PKI" "$ESPFLEET" provision "$F" --pki "$T/pki2" --count 13
expect_fail "another --chip" "$ESPFLEET" provision "$F" --pki "$PKI" --count 13 --chip esp32s3
expect_fail "--count" "$ESPFLEET" provision "$F" --pki "$PKI"

log "replaying a real device: --private-key"
"$ESPFLEET" provision "$T/replay" --pki "$PKI" --count 1 --private-key "$VECTORS_DIR/ds/kat2048.pem" >/dev/null
rid=$(sed -n 2p "$T/replay/manifest.csv" | cut -d, -f2)
[ "$(openssl x509 -in "$T/replay/devices/$rid/device.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" = \
  "$(openssl pkey -in "$VECTORS_DIR/ds/kat2048.pem" -pubout -outform DER | sha256sum)" ] || fail "--private-key not used"
expect_fail "--count 1" "$ESPFLEET" provision "$T/replay2" --pki "$PKI" --count 2 --private-key "$VECTORS_DIR/ds/kat2048.pem"

log "replaying a real device: --secure-cert + --hmac-key"
printf '%s' 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f | xxd -r -p >"$T/hmac.bin"
"$ESPFLEET" provision "$T/twin" --pki "$PKI" --count 1 --secure-cert "$VECTORS_DIR/ds/c3-rsa2048.esp_secure_cert.bin" \
        --hmac-key "$T/hmac.bin" >/dev/null
tid=$(sed -n 2p "$T/twin/manifest.csv" | cut -d, -f2)
cmp -s <(dd if="$T/twin/devices/$tid/flash.bin" bs=4096 skip=$((0x12000 / 4096)) count=2 status=none) \
        "$VECTORS_DIR/ds/c3-rsa2048.esp_secure_cert.bin" || fail "the replayed esp_secure_cert partition differs"
openssl x509 -in "$T/twin/devices/$tid/device.crt" -noout -subject | grep -q "esp-kat001" || fail "twin cert"
# its id is its certificate's CN: the broker's username, and /esp/<CN>/# under the ACL (issue #9 §4)
[ "$tid" = esp-kat001 ] || fail "a replayed device's id is '$tid', its certificate says esp-kat001"
[ -d "$T/twin/devices/esp-kat001" ] || fail "no device directory named after the certificate"
"$ESPFLEET" device show "$T/twin" esp-kat001 >/dev/null || fail "the fleet with a replayed id does not open"
expect_fail "in the fleet already" "$ESPFLEET" provision "$T/twin" --pki "$PKI" --count 1 --first-index 1 \
        --secure-cert "$VECTORS_DIR/ds/c3-rsa2048.esp_secure_cert.bin" --hmac-key "$T/hmac.bin"
# a MAC-form id that does not match its MAC is still a corrupt manifest
cp -r "$T/twin" "$T/twin-corrupt"
sed -i "2s/esp-kat001/esp-abcdef/" "$T/twin-corrupt/manifest.csv"
expect_fail "does not match MAC" "$ESPFLEET" device list "$T/twin-corrupt"
# a wrong HMAC key cannot decrypt the DS data: refused
head -c 32 /dev/zero >"$T/zero.bin"
expect_fail "DS" "$ESPFLEET" provision "$T/twin-bad" --pki "$PKI" --count 1 \
        --secure-cert "$VECTORS_DIR/ds/c3-rsa2048.esp_secure_cert.bin" --hmac-key "$T/zero.bin"
expect_fail "exactly 32 bytes" "$ESPFLEET" provision "$T/twin-bad2" --pki "$PKI" --count 1 \
        --secure-cert "$VECTORS_DIR/ds/c3-rsa2048.esp_secure_cert.bin" --hmac-key "$PKI/ca.crt"

log "development mode and NVS encryption"
"$ESPFLEET" provision "$T/dev" --pki "$PKI" --count 1 --development --nvs-encryption --chip esp32s3 >/dev/null
grep -q 'chip = "esp32s3";' "$T/dev/fleet.conf" && grep -q "development = true;" "$T/dev/fleet.conf" \
        && grep -q "nvs_encryption = true;" "$T/dev/fleet.conf" || fail "fleet.conf does not record the options"
did=$(sed -n 2p "$T/dev/manifest.csv" | cut -d, -f2)
"$ESPFLEET" device show "$T/dev" "$did" >"$T/show-dev"
grep -q "readable (development mode)" "$T/show-dev" || { cat "$T/show-dev"; fail "development key not readable"; }
grep -q "NVS encryption key *BLOCK_KEY2" "$T/show-dev" || { cat "$T/show-dev"; fail "no NVS encryption key"; }
# the settings read back through the HMAC_UP-derived XTS keys …
grep -q "use_url *0" "$T/show-dev" || { cat "$T/show-dev"; fail "encrypted settings do not read back"; }
# … and the nvs partition (0x9000, 0x6000) holds no plaintext namespace name,
# while an unencrypted device's does
dd if="$T/dev/devices/$did/flash.bin" bs=4096 skip=9 count=6 status=none | grep -aq secure_esp \
        && fail "the encrypted nvs partition shows 'secure_esp' in plaintext"
dd if="$F/devices/$id0/flash.bin" bs=4096 skip=9 count=6 status=none | grep -aq secure_esp \
        || fail "the plain nvs partition lacks the secure_esp namespace"
grep -q "use_url *0" "$T/show" || { cat "$T/show"; fail "device show lacks the settings"; }

log "inconsistent fleet directories are refused, naming the file"
cp -a "$F" "$T/b1"; rm -rf "$T/b1/devices/$id0"
expect_fail "'$id0' is listed but its directory" "$ESPFLEET" provision "$T/b1" --pki "$PKI" --count 8
expect_fail "manifest.csv" "$ESPFLEET" device list "$T/b1"
cp -a "$F" "$T/b2"; rm "$T/b2/devices/$id0/efuse.bin"
expect_fail "$id0/efuse.bin: missing" "$ESPFLEET" device list "$T/b2"
cp -a "$F" "$T/b3"; sed -i 's/^format = 1;/format = 9;/' "$T/b3/fleet.conf"
expect_fail "newer espfleet" "$ESPFLEET" provision "$T/b3" --pki "$PKI" --count 8
cp -a "$F" "$T/b4"; rm "$T/b4/fleet.conf"
expect_fail "older espfleet" "$ESPFLEET" device list "$T/b4"
expect_fail "older espfleet" "$ESPFLEET" provision "$T/b4" --pki "$PKI" --count 8
# an id of the MAC's form that is not this MAC's, and an edited one (which
# could be a replay's CN, but has no device behind it)
cp -a "$F" "$T/b5"; sed -i -E '3s/,esp-[0-9a-f]{6},/,esp-000000,/' "$T/b5/manifest.csv"
expect_fail "manifest.csv:3: id 'esp-000000' does not match MAC" "$ESPFLEET" device list "$T/b5"
cp -a "$F" "$T/b5b"; sed -i '3s/,esp-/,esq-/' "$T/b5b/manifest.csv"
expect_fail "is listed but its directory" "$ESPFLEET" device list "$T/b5b"
cp -a "$F" "$T/b6"; other=$(sed -n 3p "$F/manifest.csv" | cut -d, -f2)
cp "$F/devices/$other/efuse.bin" "$T/b6/devices/$id0/efuse.bin"
expect_fail "differs from" "$ESPFLEET" device show "$T/b6" "$id0"
cp -a "$F" "$T/b7"; echo "garbage = 1;" >>"$T/b7/fleet.conf"
expect_fail "fleet.conf:12: unknown key 'garbage'" "$ESPFLEET" device list "$T/b7"

# blank otadata: the bootloader boots ota_0, and device show says so (issue #9 §4)
cp -a "$F" "$T/blank"
bid=$(tail -n +2 "$T/blank/manifest.csv" | head -n 1 | cut -d, -f2)
python3 -c '
import sys
f = open(sys.argv[1], "r+b"); f.seek(0xf000); f.write(b"\xff" * 0x2000)
' "$T/blank/devices/$bid/flash.bin"
"$ESPFLEET" device show "$T/blank" "$bid" >"$T/blank.out" 2>&1 || { cat "$T/blank.out" >&2; fail "device show with blank otadata"; }
grep -qE "boot slot +ota_0 \(otadata blank: the bootloader's default\)" "$T/blank.out" || { cat "$T/blank.out" >&2; fail "no boot slot for blank otadata"; }
grep -qE "^  version +1\.0\.0$" "$T/blank.out" || fail "no version for blank otadata"

# a partition table that ends past the chip's 4 MiB flash is refused (gen_esp32part's words), not a larger file
cp "$SOURCE_DIR/etc/partitions.csv" "$T/big.csv"
echo "big,data,fat,0x3f0000,0x20000," >>"$T/big.csv"
expect_fail "which does not fit in available flash size 4MB" "$ESPFLEET" provision "$T/big-fleet" --pki "$PKI" --count 1 \
        --partition-table "$T/big.csv"
[ ! -e "$T/big-fleet/devices" ] || [ -z "$(ls "$T/big-fleet/devices")" ] || fail "a refused table left devices behind"

cmp -s "$PKI/ca.crt" "$T/ca.before" || fail "a refused pki init changed ca.crt"
echo "ok: pki init, provisioning, re-runs, replays and error cases"
