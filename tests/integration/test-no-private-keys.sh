#!/bin/bash
# Issue #3: "no plaintext private key is ever written anywhere under the fleet
# directory". Scans a provisioned fleet for PEM and DER private keys, after
# showing on planted keys that the scan does fail when a key is there.
set -euo pipefail
: "${ESPFLEET:?ESPFLEET must point at the espfleet binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/espfleet-nokeys.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# der_embedded FILE: finds DER private-key structures anywhere in a file
# (e.g. a flash image). PKCS#8 = INTEGER 0 + AlgorithmIdentifier
# rsaEncryption / id-ecPublicKey; traditional RSA = SEQUENCE, INTEGER 0, then
# a 1024..4096-bit modulus INTEGER; SEC1 EC (RFC 5915) = INTEGER 1, a 32-byte
# OCTET STRING and the P-256 curve OID. Public keys and certificates never
# carry these version fields there.
der_embedded() {
        python3 - "$1" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
markers = [
    rb"\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01",
    rb"\x02\x01\x00\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01",
    rb"\x30\x82..\x02\x01\x00\x02\x82..\x00",
    rb"\x02\x01\x01\x04\x20.{32}\xa0\x0a\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07",
]
sys.exit(0 if any(re.search(m, data, re.S) for m in markers) else 1)
PY
}

# scan_for_keys DIR: prints every file holding a private key; exit 1 if any.
scan_for_keys() {
        local found=0 f size
        while IFS= read -r -d '' f; do
                # PEM: "-----BEGIN PRIVATE KEY-----", "… RSA PRIVATE KEY", "… EC PRIVATE
                # KEY", "… ENCRYPTED PRIVATE KEY", anywhere in the file (also
                # inside a flash image).
                if LC_ALL=C grep -aq -- "PRIVATE KEY-----" "$f"; then
                        echo "PEM private key: $f"
                        found=1
                fi
                # DER, whole file: anything OpenSSL parses as a private key
                # (small files only: a DER key is a few KiB).
                size=$(stat -c %s "$f")
                if [ "$size" -lt 65536 ] && openssl pkey -inform DER -in "$f" -noout 2>/dev/null; then
                        echo "DER private key: $f"
                        found=1
                fi
                # DER, embedded anywhere.
                if der_embedded "$f"; then
                        echo "DER private key structure in: $f"
                        found=1
                fi
        done < <(find "$1" -type f -print0)
        return $found
}

"$ESPFLEET" pki init "$T/pki" >/dev/null
"$ESPFLEET" provision "$T/fleet" --pki "$T/pki" --count 3 --jobs 2 >/dev/null

# The scan can fail: the PKI dir holds keys by design.
if scan_for_keys "$T/pki" >"$T/pki.scan"; then fail "the scan found no key in the PKI dir"; fi
grep -q "PEM private key: .*ca.key" "$T/pki.scan" || fail "ca.key not detected"

# A PEM key planted in a copy of the fleet is found.
cp -a "$T/fleet" "$T/planted-pem"
dev=$(ls "$T/planted-pem/devices" | head -n1)
cp "$T/pki/operator.key" "$T/planted-pem/devices/$dev/backup.txt"
if scan_for_keys "$T/planted-pem" >"$T/pem.scan"; then fail "planted PEM key not found"; fi
grep -q "backup.txt" "$T/pem.scan" || fail "planted PEM key not reported"

# A PEM key hidden inside a flash image is found.
cp -a "$T/fleet" "$T/planted-flash"
dd if="$T/pki/ca.key" of="$T/planted-flash/devices/$dev/flash.bin" bs=1 seek=$((0x300000)) conv=notrunc status=none
if scan_for_keys "$T/planted-flash" >"$T/flash.scan"; then fail "PEM key inside flash.bin not found"; fi
grep -q "flash.bin" "$T/flash.scan" || fail "PEM key in flash.bin not reported"

# A DER key hidden inside a flash image is found.
cp -a "$T/fleet" "$T/planted-flash-der"
openssl pkey -in "$T/pki/operator.key" -outform DER -out "$T/op.der"
dd if="$T/op.der" of="$T/planted-flash-der/devices/$dev/flash.bin" bs=1 seek=$((0x310000)) conv=notrunc status=none
if scan_for_keys "$T/planted-flash-der" >"$T/flash-der.scan"; then fail "DER key inside flash.bin not found"; fi
grep -q "flash.bin" "$T/flash-der.scan" || fail "DER key in flash.bin not reported"

# DER keys (PKCS#8 and traditional RSA) are found.
cp -a "$T/fleet" "$T/planted-der"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -outform DER -out "$T/planted-der/devices/$dev/blob.bin" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null \
        | openssl rsa -traditional -outform DER -out "$T/planted-der/fleet.cache" 2>/dev/null
if scan_for_keys "$T/planted-der" >"$T/der.scan"; then fail "planted DER keys not found"; fi
grep -q "blob.bin" "$T/der.scan" || fail "PKCS#8 DER key not reported"
grep -q "fleet.cache" "$T/der.scan" || fail "traditional DER key not reported"

# The real fleet: no key anywhere.
if ! scan_for_keys "$T/fleet"; then fail "the provisioned fleet holds a private key"; fi
n=$(find "$T/fleet" -type f | wc -l)
[ "$n" -ge 10 ] || fail "only $n files scanned"
# Nor in a fleet on a shared key pool (the pool lives in memory only).
"$ESPFLEET" provision "$T/pool" --pki "$T/pki" --count 6 --key-pool 2 --jobs 2 >/dev/null
if ! scan_for_keys "$T/pool"; then fail "a --key-pool fleet holds a private key"; fi
echo "ok: $n files of a provisioned fleet hold no private key; planted PEM/DER keys are detected"
