#!/usr/bin/env bash
# The issue #16 bench peer end to end: bench/peer/run-peer.sh issues 50
# client certificates (bench-certs), installs MQTT.js from the lockfile when
# node_modules is missing (npm ci: needs the npm registry once), and runs
# peer.js with 50 mTLS clients against a real mosquitto. All 50 must come
# online (their retained status reaches the broker) and the result line must
# parse. Node is required: without it this test fails, it does not skip.
# No timing assertions.
source "$(dirname "$0")/lib.sh"
N=50
PEER=$SOURCE_DIR/bench/peer
: "${BENCH_CERTS:=$(dirname "$ESPFLEET")/../../bench/bench-certs}"
export BENCH_CERTS
[ -x "$BENCH_CERTS" ] || fail "bench-certs not built ($BENCH_CERTS)"
command -v node >/dev/null || fail "node is not installed: the bench peer (MQTT.js) needs it"
command -v npm >/dev/null || [ -f "$PEER/node_modules/mqtt/package.json" ] \
        || fail "npm is not installed and $PEER/node_modules is missing"

pki_init "$T/pki"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'

rc=0
"$PEER/run-peer.sh" --pki "$T/pki" --n "$N" --rate 100 --hold 1 --port "$MQTT_PORT" \
        --certs "$T/peer-certs" --keys 4 -- --timeout 60 --progress 0 \
        >"$T/peer.out" 2>"$T/peer.log" || rc=$?
cat "$T/peer.out" >&2
[ "$rc" -eq 0 ] || fail "run-peer.sh exited with $rc"

# the certificate cache: 4 private keys, mode 0600, and N certs for peer-NNNNNN
[ "$(find "$T/peer-certs" -name 'key-*.pem' -perm 0600 | wc -l)" -eq 4 ] || fail "expected 4 keys, mode 0600"
[ -f "$T/peer-certs/peer-$(printf %06d $((N - 1))).crt" ] || fail "certificate for the last client missing"
grep -qx "count=$N" "$T/peer-certs/certs.conf" || fail "certs.conf does not say count=$N"

# the result line: "peer: key=value ..." with the documented keys
line=$(grep -E '^peer: ' "$T/peer.out") || fail "no result line"
[ "$(grep -cE '^peer: ' "$T/peer.out")" -eq 1 ] || fail "more than one result line"
declare -A r
for kv in ${line#peer: }; do
        [[ $kv =~ ^([a-z0-9_]+)=(.*)$ ]] || fail "result field '$kv' is not key=value"
        r[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done
num='^[0-9]+(\.[0-9]+)?$'
for k in n online secs rate cpu_ms_per_client rss_kib_per_client failures timeouts held hold_s rss_base_kib \
        attempts heap_used_mib; do
        [[ ${r[$k]:-} =~ $num ]] || fail "result field $k='${r[$k]:-}' is missing or not a number"
done
[ "${r[n]}" -eq "$N" ] || fail "n=${r[n]}, expected $N"
[ "${r[online]}" -eq "$N" ] || fail "only ${r[online]}/$N online"
[ "${r[held]}" -eq "$N" ] || fail "only ${r[held]}/$N still connected after the hold"
[ "${r[attempts]}" -ge "$N" ] || fail "attempts=${r[attempts]} < $N"

# the broker stored every client's retained online status, under its CN
online_ids() { grep -E '^/esp/peer-[0-9]{6}/status \{"state":"online","version":"1.0.0"\}$' "$T/status.out" | cut -d' ' -f1 | sort -u | wc -l; }
all_online() { [ "$(online_ids)" -ge "$N" ]; }
wait_for 10 all_online || fail "broker saw $(online_ids)/$N online statuses"
echo "ok: bench peer brought $N MQTT.js mTLS clients online (${line#peer: })"
