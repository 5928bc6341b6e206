# shellcheck shell=bash
# Shared by the fleet benches (bench/fleet.sh, bench/instruments.sh): the
# tests' helpers (a real mosquitto with mTLS), the whole open-file limit, a
# broker without message limits, and the bench fleet in $BENCH_DIR,
# provisioned with --key-pool up to N devices (kept for later runs).
#   bench_setup N  -> PKI, FLEET; after it, start_mosquitto "$PKI"
KEY_POOL=${KEY_POOL:-16}
BENCH_DIR=${BENCH_DIR:-/var/tmp/espfleet-bench}
export ESPFLEET=$top/build/src/cli/espfleet ESPFLEETD=$top/build/src/sim/espfleetd
# mosquitto, espfleetd and node all need the whole open-file limit
ulimit -n "$(ulimit -Hn)"
MOSQUITTO_EXTRA_CONF="max_queued_messages 0
max_inflight_messages 0"
. "$top/tests/integration/lib.sh"

bench_setup() {
        local n=$1 have
        PKI=$BENCH_DIR/pki
        FLEET=$BENCH_DIR/fleet
        mkdir -p "$BENCH_DIR"
        [ -f "$PKI/$PKI_CA" ] || "$ESPFLEET" pki init "$PKI" >/dev/null
        have=$( [ -f "$FLEET/manifest.csv" ] && tail -n +2 "$FLEET/manifest.csv" | wc -l || echo 0)
        if [ "$have" -lt "$n" ]; then
                log "provisioning $((n - have)) more devices (--key-pool $KEY_POOL)"
                "$ESPFLEET" provision "$FLEET" --pki "$PKI" --count "$n" --key-pool "$KEY_POOL" --quiet
        fi
}
