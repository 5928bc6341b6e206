#!/usr/bin/env bash
# The main job on an embedded default, on one machine:
#   a loopback Mosquitto with mTLS and per-device ACLs, an HTTPS OTA server
#   (`openssl s_server -WWW`, as the secure_esp README runs it), and a fleet
#   of 100 emulated ESP32-C3 devices under espfleetd.
# It installs missing Debian packages, builds, provisions (once; re-runs keep
# the fleet), shows the fleet coming online, exercises every topic, then keeps
# showing the fleet's log until Ctrl-C, when it stops everything cleanly.
#
#   scripts/demo.sh              # 100 devices, state in ./.demo
#   COUNT=20 scripts/demo.sh     # fewer devices
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps
ensure_build build >/dev/null

COUNT=${COUNT:-100}
DEMO=${ESPFLEET_DEMO_DIR:-$top/.demo}
export ESPFLEET=$top/build/src/cli/espfleet
export ESPFLEETD=$top/build/src/sim/espfleetd
export ESPFLEET_RUN_DIR=$DEMO/run KEEP_TMP=1
mkdir -p "$DEMO"
rm -rf "$DEMO/run"
# shellcheck source=tests/integration/lib.sh
. tests/integration/lib.sh
set +e +o pipefail  # the demo reports problems itself and keeps going

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

PKI=$DEMO/pki
FLEET=$DEMO/fleet
WWW=$DEMO/www
if [ ! -f "$PKI/$PKI_CA" ]; then
        say "Creating the demo PKI in $PKI"
        "$ESPFLEET" pki init "$PKI" || exit 1
fi
say "Provisioning $COUNT devices in $FLEET (eFuse + DS key, flash image, signed firmware 1.0.0)"
time "$ESPFLEET" provision "$FLEET" --pki "$PKI" --count "$COUNT" || exit 1

say "Building and signing firmware 1.1.0 for the OTA server"
mkdir -p "$WWW"
"$ESPFLEET" image build --version 1.1.0 --project secure_esp -o "$WWW/secure_esp.bin" >/dev/null || exit 1
"$ESPFLEET" image sign --key "$PKI/secure_boot_signing_key.pem" "$WWW/secure_esp.bin" >/dev/null || exit 1
"$ESPFLEET" image info "$WWW/secure_esp.bin" | sed -n 1,12p

say "Starting mosquitto (mTLS, require_certificate, use_identity_as_username, ACL)"
start_mosquitto "$PKI"
echo "broker: mqtts://localhost:$MQTT_PORT  (config: $T/mosquitto.conf, ACL: $T/acl)"
say "Starting the OTA server: openssl s_server -WWW in $WWW"
start_s_server "$PKI" "$WWW"
URL="https://localhost:$OTA_PORT/secure_esp.bin"
echo "firmware URL: $URL"

METRICS_PORT=$(free_port)
write_conf "$DEMO/espfleet.conf" "$FLEET" \
        "ramp = { rate = 50.0; };" \
        "ota = { default_url = \"$URL\"; };" \
        "log = { summary_interval = 5; };" \
        "metrics = { listen = \"127.0.0.1:$METRICS_PORT\"; };"
mqtt_sub_bg "$PKI" "$T/fleet.out" '/esp/+/log' '/esp/+/status'

say "Starting espfleetd -c $DEMO/espfleet.conf --report $DEMO/report.json --report-html $DEMO/report.html"
"$ESPFLEETD" -c "$DEMO/espfleet.conf" --report "$DEMO/report.json" --junit "$DEMO/report.xml" \
        --report-html "$DEMO/report.html" >>"$T/espfleetd.log" 2>&1 &
DAEMON_PID=$!
_PIDS+=("$DAEMON_PID")
echo "metrics: http://127.0.0.1:$METRICS_PORT/metrics   status: $ESPFLEET status -c $DEMO/espfleet.conf"
tail -n +1 -f "$T/espfleetd.log" --pid=$$ 2>/dev/null | grep --line-buffered -E "summary|online|READY|error" &
_PIDS+=("$!")

online() { grep -E '^/esp/[^/]+/status .*"state":"online"' "$T/fleet.out" | cut -d' ' -f1 | sort -u | wc -l; }
all_online() { [ "$(online)" -ge "$COUNT" ]; }
if wait_for 180 all_online; then
        say "All $COUNT devices are online"
else
        say "Only $(online) of $COUNT devices came online (see $T/espfleetd.log)"
fi
first=$(sed -n 2p "$FLEET/manifest.csv" | cut -d, -f2)
say "\$ espfleet status (the daemon's control socket)"
"$ESPFLEET" status -c "$DEMO/espfleet.conf" | head -n 25

op() { echo "\$ mosquitto_pub -t '$1' -m '$2'"; mqtt_pub "$PKI" "$1" "$2"; sleep 1; }
say "Exercising the topic contract (operator certificate, as in the secure_esp README)"
op /esp/update/url "$URL"
op /esp/update/use_url 1
op "/esp/$first/update/interval" 3600
op "/esp/$first/update/interval" 12          # rejected: below 300
op /esp/update/url "http://insecure.example/fw.bin"   # rejected: not https
op "/esp/$first/restart" ""
sleep 3
say "What $first logged:"
grep -E "^/esp/$first/log " "$T/fleet.out" | tail -n 15 | cut -d' ' -f2-

say "OTA: /esp/update/run to the whole fleet (firmware 1.0.0 -> 1.1.0)"
op /esp/update/run ""
updated() { grep -E '"state":"online","version":"1.1.0"' "$T/fleet.out" | cut -d' ' -f1 | sort -u | wc -l; }
all_updated() { [ "$(updated)" -ge "$COUNT" ]; }
wait_for 300 all_updated
echo "devices running 1.1.0: $(updated)/$COUNT"
say "\$ espfleet status $first"
"$ESPFLEET" status "$first" -c "$DEMO/espfleet.conf"
say "A few of the metrics (Prometheus text format):"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^espfleet_(connects_total|ota_outcomes_total|connect_seconds_count)' | head -n 8

say "The fleet keeps running. Logs: $T/espfleetd.log, MQTT: $T/fleet.out. Ctrl-C stops everything and writes $DEMO/report.{json,xml,html}."
tail -n 0 -f "$T/fleet.out" | cut -c1-160 &
_PIDS+=("$!")
wait "$DAEMON_PID"
