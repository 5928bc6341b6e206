#!/usr/bin/env bash
# No secret in a core dump (issue #9 §6): a worker's core, taken with gdb's
# gcore (which honours MADV_DONTDUMP, as the kernel does) while its device is
# online over mTLS, holds neither the eFuse HMAC key nor the DS key's private
# factors. The test knows both secrets (the key is the DS vector's, the HMAC
# key is read from the eFuse file); as a control, the same search finds the
# public modulus, which is not hidden.
source "$(dirname "$0")/lib.sh"
command -v gcore >/dev/null || fail "gcore (gdb) is needed"
V=$VECTORS_DIR/ds

pki_init "$T/pki"
# a device with a known RSA key (the DS vector's), made by provisioning: a
# random HMAC key in eFuse KEY1 (BLOCK5, file bytes 144..175), the DS data
# sealed under it, a certificate from the fleet CA
"$ESPFLEET" provision "$T/fleet" --pki "$T/pki" --count 1 --private-key "$V/kat2048.pem" >/dev/null
grep -q "ds_key_block = 1;" "$T/fleet/fleet.conf" || fail "the DS key is not in KEY1"
id=$(sed -n 2p "$T/fleet/manifest.csv" | cut -d, -f2)
dd if="$T/fleet/devices/$id/efuse.bin" bs=1 skip=144 count=32 status=none >"$T/hmac.bin"
[ "$(xxd -p -c 64 "$T/hmac.bin")" != "$(printf '0%.0s' {1..64})" ] || fail "KEY1 is blank"
start_mosquitto "$T/pki"
write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 0; };' \
        'log = { summary_interval = 1; };'
start_daemon "$T/espfleetd.conf"
wait_count 30 "$T/espfleetd.log" "Fleet: online 1/1" 1 || fail "the device did not come online"
worker=$(pgrep -P "$DAEMON_PID" -f 'espfleetd --worker' | head -n 1 || true)
[ -n "$worker" ] || fail "no worker process"
gcore -o "$T/core" "$worker" >"$T/gcore.log" 2>&1 || { cat "$T/gcore.log"; fail "gcore failed"; }
core=$T/core.$worker
[ -s "$core" ] || fail "no core written"

# the secrets and the control, as hex: p and q big-endian (the CRT form) and
# little-endian (a BIGNUM's words), the HMAC key, the public modulus
field() {   # openssl's "name:" block of `rsa -text`, as bare hex without a sign byte
        openssl rsa -in "$V/kat2048.pem" -noout -text 2>/dev/null |
                awk -v f="$1:" '$1 == f {on = 1; next} /^[a-zA-Z]/ {on = 0} on' | tr -d ' :\n' | sed 's/^00//'
}
p=$(field prime1); q=$(field prime2); n=$(field modulus)
[ ${#p} -eq 256 ] && [ ${#q} -eq 256 ] && [ ${#n} -eq 512 ] || fail "could not read the vector key's factors"
python3 - "$core" "$p" "$q" "$(xxd -p -c 64 "$T/hmac.bin")" "$n" <<'PY' || fail "a secret is in the worker's core dump"
import sys
core = open(sys.argv[1], 'rb').read()
p, q, hmac, n = (bytes.fromhex(h) for h in sys.argv[2:6])
found = []
for name, s in (('prime p', p), ('prime q', q), ('HMAC key', hmac)):
    for form, b in (('big-endian', s), ('little-endian', s[::-1])):
        if core.find(b) >= 0:
            found.append(f'{name} ({form})')
if found:
    print('FAIL: in the core: ' + ', '.join(found), file=sys.stderr)
    sys.exit(1)
if core.find(n) < 0:
    print('FAIL: the public modulus is not in the core either: the search proves nothing', file=sys.stderr)
    sys.exit(1)
print(f'# core of {len(core)} bytes: the public modulus is there, no HMAC key, no prime', file=sys.stderr)
PY
stop_daemon
echo "ok: a worker's core dump holds no HMAC key and no DS private factor"
