#!/usr/bin/env bash
# metrics.listen: the daemon's /metrics passes `promtool check metrics`, and a
# real Prometheus server scraping it sees the fleet as it is: devices per
# state, one connect per device (then one more after a restart), connection
# latencies, PUBACKs of QoS 1 telemetry, and the failures of a broker outage
# by reason.
source "$(dirname "$0")/lib.sh"
N=6
command -v prometheus >/dev/null || fail "prometheus is not installed (Debian package prometheus; scripts/deps.sh)"
command -v promtool >/dev/null || fail "promtool is not installed (Debian package prometheus)"

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
MPORT=$(free_port)
write_conf "$T/espfleetd.conf" "$T/fleet" \
        'workers = 2;' \
        'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };' \
        'telemetry = { enabled = true; interval = 1; qos = 1; };' \
        'reconnect = { backoff_min_ms = 200; backoff_max_ms = 1000; };' \
        "metrics = { listen = \"127.0.0.1:$MPORT\"; };"
start_daemon "$T/espfleetd.conf"
wait_for 30 port_open "$MPORT" || fail "no metrics listener on $MPORT"
wait_count 60 "$T/espfleetd.log" "Initial ramp done: $N/$N" 1 || fail "the fleet did not come online"

curl -sf "http://127.0.0.1:$MPORT/metrics" >"$T/metrics.txt" || fail "GET /metrics failed"
promtool check metrics <"$T/metrics.txt" >"$T/promtool.log" 2>&1 || { cat "$T/promtool.log" >&2; fail "promtool check metrics"; }
grep -q '^espfleet_connects_total{worker="1"}' "$T/metrics.txt" || fail "no per-worker series"
grep -q '^espfleet_tls_handshake_seconds_bucket{worker="0",le="+Inf"}' "$T/metrics.txt" || fail "no TLS histogram"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/nope")
[ "$code" = 404 ] || fail "an unknown path answered $code, not 404"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$MPORT/metrics")
[ "$code" = 405 ] || fail "POST answered $code, not 405"

# a real Prometheus scrapes it every second
PPORT=$(free_port)
cat >"$T/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: espfleet
    static_configs: [ { targets: ["127.0.0.1:$MPORT"] } ]
YML
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prom" \
        --web.listen-address="127.0.0.1:$PPORT" >>"$T/prometheus.log" 2>&1 &
_PIDS+=("$!")
wait_for 60 port_open "$PPORT" || fail "prometheus did not listen"

# query EXPR -> the scalar value of a one-element vector ("" when empty)
query() {
        curl -sf --get "http://127.0.0.1:$PPORT/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["status"] == "success", d
r = d["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
# wait_query TIMEOUT EXPR VALUE: until Prometheus answers VALUE for EXPR.
wait_query() {
        local timeout=$1 expr=$2 want=$3 got=""
        local end=$((SECONDS + timeout))
        while :; do
                got=$(query "$expr" || true)
                [ "$got" = "$want" ] && return 0
                [ "$SECONDS" -lt "$end" ] || { echo "# $expr = '$got', want '$want'" >&2; return 1; }
                sleep 0.5
        done
}

wait_query 60 'up{job="espfleet"}' 1 || fail "Prometheus does not scrape the daemon"
wait_query 30 'sum(espfleet_devices{state="online"})' "$N" || fail "online gauge != $N"
wait_query 10 'count(espfleet_connects_total)' 2 || fail "not one connects series per worker"
wait_query 10 'sum(espfleet_connects_total)' "$N" || fail "connects != $N"
wait_query 10 'sum(espfleet_connect_seconds_count)' "$N" || fail "connect histogram count != $N"
wait_query 10 'sum(espfleet_tls_handshake_seconds_count)' "$N" || fail "handshake histogram count != $N"
wait_query 10 'sum(espfleet_ds_sign_seconds_count) >= bool '"$N" 1 || fail "fewer DS signatures than handshakes"
wait_query 10 'sum(espfleet_suback_seconds_count) >= bool '"$((4 * N))" 1 || fail "SUBACKs not timed"
wait_query 30 'sum(espfleet_puback_seconds_count) > bool 0' 1 || fail "no PUBACK of QoS 1 telemetry timed"
p99=$(query 'histogram_quantile(0.99, sum by (le) (espfleet_connect_seconds_bucket))')
python3 -c "import sys; v=float('$p99'); sys.exit(0 if 0 < v < 60 else 1)" || fail "connect p99 '$p99' is not a latency"
[ "$(query 'sum(espfleet_connect_failures_total)')" = "" ] || fail "failures counted on a clean start"

# one device restarts: one reboot, one more connect
id=$(tail -n +2 "$T/fleet/manifest.csv" | head -n 1 | cut -d, -f2)
mqtt_pub "$T/pki" "/esp/$id/restart" 1
wait_query 60 'sum(espfleet_reboots_total)' 1 || fail "the restart is not a reboot"
wait_query 60 'sum(espfleet_connects_total)' "$((N + 1))" || fail "the restarted device did not connect again"
wait_query 10 'sum(espfleet_disconnects_total{reason="requested"})' 1 || fail "the restart's disconnect is not 'requested'"

# the broker goes away: every device loses its connection, then reconnects are refused
stop_mosquitto
wait_query 60 'sum(espfleet_disconnects_total{reason=~"tcp_reset|errno_.*|keepalive_timeout|protocol_error"}) >= bool '"$N" 1 \
        || { query 'espfleet_disconnects_total' >&2; fail "lost connections not counted"; }
wait_query 60 'sum(espfleet_connect_failures_total{reason="tcp_refused"}) > bool 0' 1 || fail "refused connects not counted"
wait_query 30 'sum(espfleet_devices{state="online"})' 0 || fail "devices still online without a broker"
start_mosquitto "$T/pki" "$MQTT_PORT"
wait_query 90 'sum(espfleet_devices{state="online"})' "$N" || fail "the fleet did not come back"

# the shipped Grafana dashboard: every query is valid PromQL for this
# Prometheus, and every series it names exists
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$T/metrics.txt"
python3 - "$SOURCE_DIR/contrib/grafana/espfleet.json" "$T/metrics.txt" "$PPORT" <<'PY' || fail "the Grafana dashboard does not fit the metrics"
import json, re, sys, urllib.parse, urllib.request
dash, metrics, port = sys.argv[1], sys.argv[2], sys.argv[3]
have = set(re.findall(r"^# TYPE (\S+) ", open(metrics).read(), re.M))
exprs = [t["expr"] for p in json.load(open(dash))["panels"] for t in p.get("targets", [])]
assert len(exprs) > 20, len(exprs)
for e in exprs:
    for name in re.findall(r"\b(espfleet_[a-z0-9_]+)", e):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in have or base in have, f"{name} (in {e}) is not exported"
    q = e.replace('$job', 'espfleet').replace('$__rate_interval', '1m')
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    r = json.load(urllib.request.urlopen(url))
    assert r["status"] == "success", (q, r)
print(f"{len(exprs)} dashboard queries ok")
PY
curl -sf "http://127.0.0.1:$MPORT/metrics" | promtool check metrics >"$T/promtool.log" 2>&1 \
        || { cat "$T/promtool.log" >&2; fail "promtool check metrics after the outage"; }
stop_daemon
echo "ok: Prometheus sees $N devices, their latencies, a restart and a broker outage by reason"
