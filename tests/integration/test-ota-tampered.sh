#!/usr/bin/env bash
# Images tampered with after signing are refused with
# ESP_ERR_OTA_VALIDATE_FAILED, each by the check that catches it:
#   device 0: one byte of the app changed          -> the appended SHA-256;
#   device 1: the same, checksum and SHA-256 fixed  -> the signature;
#   device 2: one byte of the RSA signature, block CRC fixed -> RSA-PSS.
# Each refusal is final (one request, no retry). Every device keeps running
# 1.0.0 with ota_0 selected and ota_1 unbootable; the report counts three
# ESP_ERR_OTA_VALIDATE_FAILED.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 3
ota_image good.bin 2.0.0
python3 - "$OTA_WWW" <<'PY' || fail "tampering failed"
import hashlib, sys, zlib
www = sys.argv[1]
img = bytearray(open(f"{www}/good.bin", "rb").read())
# header: 24 bytes; segment list from offset 24: (load, len) + data
nseg = img[1]
off = 24
for _ in range(nseg):
    seglen = int.from_bytes(img[off + 4:off + 8], "little")
    last_data = off + 8
    off += 8 + seglen
end = off                        # end of the last segment
image_len = (end + 1 + 15) // 16 * 16 + 32   # checksum byte, pad to 16, hash
assert img[0] == 0xE9 and img[23] == 1, "unexpected header"
victim = last_data + 1000        # inside the last segment's data
def save(name, b):
    open(f"{www}/{name}", "wb").write(b)
a = bytearray(img); a[victim] ^= 0x5A
save("tampered-body.bin", a)
b = bytearray(img); b[victim] ^= 0x5A
b[image_len - 33] ^= 0x5A       # the XOR checksum byte stays consistent
b[image_len - 32:image_len] = hashlib.sha256(b[:image_len - 32]).digest()
save("tampered-rehashed.bin", b)
c = bytearray(img)
# the signature sector is the last 4 KiB of the file; block 0 (RSA-3072,
# version 2) starts there: the signature is bytes 812..1195, the CRC32 of
# bytes 0..1195 follows (as espsecure computes it: zlib.crc32)
blk = len(c) - 4096
assert c[blk] == 0xE7 and c[blk + 1] == 0x02, "block 0 is not an RSA-3072 block"
c[blk + 900] ^= 0x01
c[blk + 1196:blk + 1200] = zlib.crc32(bytes(c[blk:blk + 1196])).to_bytes(4, "little")
save("tampered-signature.bin", c)
PY
# the tampering is what we meant: only the first image is broken as an image
info=$("$ESPFLEET" image info "$OTA_WWW/tampered-body.bin" 2>&1 || true)
grep -qE '^Image: +INVALID: checksum mismatch' <<<"$info" || { echo "$info" >&2; fail "tampered-body.bin: still valid"; }
info=$("$ESPFLEET" image info "$OTA_WWW/tampered-rehashed.bin" 2>&1 || true)
grep -qE '^  SHA-256: +[0-9a-f]{64} valid$' <<<"$info" || { echo "$info" >&2; fail "tampered-rehashed.bin: hash not fixed"; }
"$ESPFLEET" image verify "$OTA_WWW/tampered-rehashed.bin" --key "$T/pki/secure_boot_signing_key.pem" \
        >>"$T/image.log" 2>&1 && fail "tampered-rehashed.bin still verifies"

start_s_server "$T/pki" "$OTA_WWW"
OTA_REPORT=$T/report.json ota_daemon "https://localhost:$OTA_PORT/none.bin"
names=(tampered-body tampered-rehashed tampered-signature)
for i in 0 1 2; do
        ota_set_url "${OTA_IDS[$i]}" "https://localhost:$OTA_PORT/${names[$i]}.bin"
done
ota_run
ota_expect_final "${OTA_IDS[0]}" 'ESP_ERR_OTA_VALIDATE_FAILED: invalid image: checksum mismatch'
ota_expect_final "${OTA_IDS[1]}" 'ESP_ERR_OTA_VALIDATE_FAILED: secure boot check fail: signature block 0 .*signs digest'
ota_expect_final "${OTA_IDS[2]}" 'ESP_ERR_OTA_VALIDATE_FAILED: secure boot check fail: signature block 0 '
grep -E "^/esp/${OTA_IDS[2]}/log E .*upgrade failed" "$T/log.out" | grep -qE 'CRC|signs digest' \
        && fail "the signature tamper was caught by the CRC or digest, not by RSA-PSS"

stop_daemon
for i in 0 1 2; do ota_expect_unbootable "${OTA_IDS[$i]}"; done
ota_report_check "$T/report.json" "{'${OTA_IDS[0]}': 'ESP_ERR_OTA_VALIDATE_FAILED',
        '${OTA_IDS[1]}': 'ESP_ERR_OTA_VALIDATE_FAILED', '${OTA_IDS[2]}': 'ESP_ERR_OTA_VALIDATE_FAILED'}"
echo "ok: tampered images refused"
