#!/usr/bin/env bash
# A mixed OTA run and its reports (--report, --junit, --report-html, SIGUSR1):
#   devices 0, 1: a good image            -> 2.0.0 installed, JUnit passes;
#   devices 2, 3: a corrupt image         -> ESP_ERR_OTA_VALIDATE_FAILED;
#   device 4:     a server that is down   -> ESP_ERR_HTTP_CONNECT;
#   device 5:     no OTA                  -> passes, 1.0.0.
# The JSON report's device table and the JUnit testcases are checked
# against what each device did; the reports are written at SIGTERM with the
# states the devices ended the run in (online), not after they disconnected.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 6
ota_image good.bin 2.0.0
python3 - "$OTA_WWW" <<'PY' || fail "corrupting failed"
import sys
www = sys.argv[1]
img = bytearray(open(f"{www}/good.bin", "rb").read())
img[len(img) // 2] ^= 0x5A
open(f"{www}/corrupt.bin", "wb").write(img)
PY
start_s_server "$T/pki" "$OTA_WWW"
down=$(free_port)
write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; };' \
        "ota = { default_url = \"https://localhost:$OTA_PORT/good.bin\"; confirm_timeout = 5; };"
"$ESPFLEETD" -c "$T/espfleetd.conf" --report "$T/report.json" --junit "$T/junit.xml" \
        --report-html "$T/report.html" >>"$T/espfleetd.log" 2>&1 &
DAEMON_PID=$!
_PIDS+=("$DAEMON_PID")
wait_count 90 "$T/log.out" 'MQTT_EVENT_CONNECTED' ${#OTA_IDS[@]} || fail "devices did not come online"

ota_set_url "${OTA_IDS[2]}" "https://localhost:$OTA_PORT/corrupt.bin"
ota_set_url "${OTA_IDS[3]}" "https://localhost:$OTA_PORT/corrupt.bin"
ota_set_url "${OTA_IDS[4]}" "https://localhost:$down/fw.bin"
for i in 0 1 2 3 4; do mqtt_pub "$T/pki" "/esp/${OTA_IDS[$i]}/update/run" ""; done
ota_expect_installed "${OTA_IDS[0]}" 2.0.0 90
ota_expect_installed "${OTA_IDS[1]}" 2.0.0 90
ota_expect_refused "${OTA_IDS[2]}" 'ESP_ERR_OTA_VALIDATE_FAILED'
ota_expect_refused "${OTA_IDS[3]}" 'ESP_ERR_OTA_VALIDATE_FAILED'
ota_expect_refused "${OTA_IDS[4]}" 'ESP_ERR_HTTP_CONNECT.*gave up after'

# SIGUSR1: a report now, the daemon goes on
kill -USR1 "$DAEMON_PID"
wait_for 10 test -s "$T/report.json" || fail "no report after SIGUSR1"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["run"]["reason"]=="SIGUSR1", r["run"]' \
        "$T/report.json" || fail "the SIGUSR1 report does not say so"
kill -0 "$DAEMON_PID" || fail "the daemon stopped on SIGUSR1"
rm -f "$T/report.json" "$T/junit.xml" "$T/report.html"

stop_daemon
for f in report.json junit.xml report.html; do [ -s "$T/$f" ] || fail "no $f at exit"; done
ls "$T" | grep -q '\.tmp\.' && fail "a temporary report file was left behind"

python3 - "$T/report.json" "$T/junit.xml" "${OTA_IDS[@]}" <<'PY' || fail "the reports do not match what the devices did"
import json, sys, xml.etree.ElementTree as ET
report, junit, ids = sys.argv[1], sys.argv[2], sys.argv[3:]
r = json.load(open(report))
want = {  # id -> (OTA result, version, JUnit failure type or None)
    ids[0]: ("ESP_OK", "2.0.0", None),
    ids[1]: ("ESP_OK", "2.0.0", None),
    ids[2]: ("ESP_ERR_OTA_VALIDATE_FAILED", "1.0.0", "ESP_ERR_OTA_VALIDATE_FAILED"),
    ids[3]: ("ESP_ERR_OTA_VALIDATE_FAILED", "1.0.0", "ESP_ERR_OTA_VALIDATE_FAILED"),
    ids[4]: ("ESP_ERR_HTTP_CONNECT", "1.0.0", "ESP_ERR_HTTP_CONNECT"),
    ids[5]: (None, "1.0.0", None),
}
assert r["run"]["reason"] == "SIGTERM", r["run"]
for k in ("espfleet", "host", "config", "summary", "histograms", "counters", "timeline", "devices"):
    assert k in r, f"no '{k}' in the report"
assert r["espfleet"]["openssl"].startswith("OpenSSL"), r["espfleet"]
assert r["config"]["ota.confirm_timeout"] == 5, r["config"].get("ota.confirm_timeout")
assert r["summary"]["devices"] == 6 and r["summary"]["online"] == 6, r["summary"]
assert r["summary"]["ota"] == {"ok": 2, "failed": 3, "rolled_back": 0}, r["summary"]["ota"]
assert r["counters"]["ota_results"] == {"ESP_OK": 2, "ESP_ERR_OTA_VALIDATE_FAILED": 2, "ESP_ERR_HTTP_CONNECT": 1}, \
    r["counters"]["ota_results"]
for h in ("connect", "tls_handshake", "connack", "ota_download", "ota_verify", "ota_run_to_online"):
    assert r["histograms"][h]["count"] > 0, (h, r["histograms"][h])
c = r["histograms"]["connect"]
assert 0 < c["p50"] <= c["p90"] <= c["p99"] <= c["p99.9"] <= c["max"], c
assert r["histograms"]["ota_run_to_online"]["count"] == 2, r["histograms"]["ota_run_to_online"]
assert len(r["timeline"]["t"]) == len(r["timeline"]["online"]) > 0 and max(r["timeline"]["online"]) == 6
devs = {d["id"]: d for d in r["devices"]}
assert set(devs) == set(ids), sorted(devs)
for i, (res, ver, _) in want.items():
    d = devs[i]
    assert d["state"] == "online", (i, d["state"])
    assert d["version"] == ver, (i, d["version"], ver)
    assert d["ota"]["result"] == res, (i, d["ota"])
    if res and res != "ESP_OK":
        assert res in (d["last_error"] or ""), (i, d["last_error"])
cases = {tc.get("name"): tc for tc in ET.parse(junit).getroot().iter("testcase")}
assert set(cases) == set(ids), sorted(cases)
suite = ET.parse(junit).getroot().find("testsuite")
assert suite.get("tests") == "6" and suite.get("failures") == "3", suite.attrib
for i, (_, _, failure) in want.items():
    f = cases[i].find("failure")
    if failure is None:
        assert f is None, (i, f.attrib)
    else:
        assert f is not None, f"{i}: no failure"
        assert f.get("type") == failure and f.get("message").startswith(failure), (i, f.attrib)
PY
grep -q '<svg' "$T/report.html" || fail "the HTML report has no chart"
echo "ok: JSON and JUnit reports match each device's OTA outcome"
