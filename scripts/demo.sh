#!/usr/bin/env bash
# The main job on an embedded default, on one machine:
#   a loopback Mosquitto with mTLS and per-device ACLs, an HTTPS OTA server
#   (`openssl s_server -WWW`, as the secure_esp README runs it), and a fleet
#   of 100 emulated ESP32-C3 devices under espfleetd.
# It installs missing Debian packages, builds, provisions (once; re-runs keep
# the fleet), shows the fleet coming online, exercises every topic, updates
# the fleet to a version newer than the one it runs, then keeps showing the
# fleet's log until Ctrl-C, when it stops everything cleanly.
#
#   scripts/demo.sh              # 100 devices, state in ./.demo
#   COUNT=20 scripts/demo.sh     # runs exactly 20 devices (of a fleet that may hold more)
#   scripts/demo.sh --reset      # starts again from nothing: a new PKI and fleet
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
RESET=0
for a in "$@"; do
        case $a in
        --reset) RESET=1 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
        esac
done
COUNT=${COUNT:-100}
case $COUNT in ''|*[!0-9]*|0) echo "demo.sh: COUNT='$COUNT' is not a positive number" >&2; exit 2 ;; esac
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
ensure_deps
BUILD=${ESPFLEET_DEMO_BUILD:-build}     # the tests point it at their own build
if [ ! -x "$BUILD/src/sim/espfleetd" ]; then
        echo "Building espfleet with meson in $BUILD (the first build takes about 20 s) …"
else
        echo "Bringing $BUILD up to date …"
fi
ensure_build "$BUILD" >/dev/null || { echo "demo.sh: the build failed; run 'ninja -C $BUILD' to see why" >&2; exit 1; }
BUILD=$(cd "$BUILD" && pwd)

DEMO=${ESPFLEET_DEMO_DIR:-$top/.demo}
if [ "$RESET" -eq 1 ] && [ -d "$DEMO" ]; then
        echo "--reset: removing $DEMO (its PKI, fleet, firmware and reports)"
        rm -rf "$DEMO"
fi
export ESPFLEET=$BUILD/src/cli/espfleet
export ESPFLEETD=$BUILD/src/sim/espfleetd
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
have=0
[ -f "$FLEET/manifest.csv" ] && have=$(($(wc -l <"$FLEET/manifest.csv") - 1))
if [ "$have" -ge "$COUNT" ]; then
        say "The fleet in $FLEET holds $have devices: running $COUNT of them (scripts/demo.sh --reset starts anew)"
else
        say "Provisioning $((COUNT - have)) devices in $FLEET (eFuse + DS key, flash image, signed firmware 1.0.0)"
        time "$ESPFLEET" provision "$FLEET" --pki "$PKI" --count "$COUNT" || exit 1
fi

# The devices run whatever an earlier run left them: offer the next minor
# version of the newest one, so that the update is always an update.
RUNNING=$("$ESPFLEET" device list "$FLEET" --format json | python3 -c '
import json, sys
n = int(sys.argv[1])
vs = [d["version"] for d in json.load(sys.stdin)["devices"][:n] if d["version"]]
key = lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")]
print(max(vs, key=key) if vs else "1.0.0")' "$COUNT")
NEW=$(python3 -c '
import sys
p = [int(x) if x.isdigit() else 0 for x in sys.argv[1].split(".")] + [0, 0]
print("%d.%d.0" % (p[0], p[1] + 1))' "$RUNNING")
say "Building and signing firmware $NEW for the OTA server (the fleet runs $RUNNING)"
mkdir -p "$WWW"
"$ESPFLEET" image build --version "$NEW" --project secure_esp -o "$WWW/secure_esp.bin" >/dev/null || exit 1
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
        "device_count = $COUNT;" \
        "ramp = { rate = 50.0; };" \
        "ota = { default_url = \"$URL\"; };" \
        "log = { summary_interval = 5; };" \
        "metrics = { listen = \"127.0.0.1:$METRICS_PORT\"; };"
# -R: not the statuses the broker retained from an earlier run; only what
# this run's devices say
mosquitto_sub -h localhost -p "$MQTT_PORT" --cafile "$PKI/$PKI_CA" --cert "$PKI/$PKI_OPERATOR_CERT" \
        --key "$PKI/$PKI_OPERATOR_KEY" -R -v -t '/esp/+/log' -t '/esp/+/status' >"$T/fleet.out" 2>>"$T/mosquitto_sub.log" &
_PIDS+=("$!")
sleep 0.5

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

say "OTA: /esp/update/run to the whole fleet (firmware $RUNNING -> $NEW)"
mark=$(wc -l <"$T/fleet.out")
op /esp/update/run ""
# what each device said since the command: online with the new version, or
# an OTA that failed (refused, or gave up)
updated() { tail -n +"$mark" "$T/fleet.out" | grep -F "\"state\":\"online\",\"version\":\"$NEW\"" \
        | cut -d' ' -f1 | sort -u | wc -l; }
failed() { tail -n +"$mark" "$T/fleet.out" | grep -E '^/esp/[^/]+/log E .*upgrade failed' | cut -d' ' -f1 | sort -u | wc -l; }
end=$((SECONDS + 300)) last=-1
while :; do
        u=$(updated) f=$(failed)
        if [ "$((u + f))" -ne "$last" ]; then
                printf '  %d/%d updated, %d failed, %d in progress\n' "$u" "$COUNT" "$f" "$((COUNT - u - f))"
                last=$((u + f))
        fi
        [ "$((u + f))" -ge "$COUNT" ] && break
        if [ "$SECONDS" -ge "$end" ]; then
                echo "  gave up waiting after 300 s"
                break
        fi
        sleep 1
done
echo "devices running $NEW: $(updated)/$COUNT"
if [ "$(failed)" -gt 0 ]; then
        echo "why the first failures failed:"
        tail -n +"$mark" "$T/fleet.out" | grep -E '^/esp/[^/]+/log E .*upgrade failed' | head -n 3 | cut -c1-200
fi
say "\$ espfleet status $first"
"$ESPFLEET" status "$first" -c "$DEMO/espfleet.conf"
say "A few of the metrics (Prometheus text format):"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^espfleet_(connects_total|ota_outcomes_total|connect_seconds_count)' | head -n 8

say "The fleet keeps running. Logs: $T/espfleetd.log, MQTT: $T/fleet.out. Ctrl-C stops everything and writes $DEMO/report.{json,xml,html}."
tail -n 0 -f "$T/fleet.out" | cut -c1-160 &
_PIDS+=("$!")
wait "$DAEMON_PID"
