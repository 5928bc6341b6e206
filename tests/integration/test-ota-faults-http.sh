#!/usr/bin/env bash
# OTA server faults, status codes and redirects (README "OTA server faults"):
# one device per fault, all against tests/integration/fault-server.py at once.
#   404:           ESP_FAIL, final (one request);
#   500:           ESP_FAIL, transient: retried up to ota.max_retries (2);
#   503:           ESP_FAIL, transient, and the next delay is the server's
#                  Retry-After (1 s), or the backoff maximum (2 s) when it
#                  asks for an hour;
#   416 on resume: the first GET is cut, the resumption gets 416: one more
#                  try from byte 0 (not counted), no Range after that, and the
#                  cuts are given up on as ESP_ERR_HTTP_CONNECTION_CLOSED;
#   redirect loop: ESP_ERR_HTTP_MAX_REDIRECT after 10 redirects, final;
#   redirect to http://: ESP_ERR_HTTP_INVALID_TRANSPORT, final, nothing fetched.
# 1.0.0 keeps running everywhere, ota_1 is left unbootable, and the report
# counts each outcome.
source "$(dirname "$0")/ota-lib.sh"

faults=(status-404 status-500 status-503 range-416 redirect-loop redirect-http)
ota_fleet ${#faults[@]}
ota_image fw.bin 2.0.0 --size 128K
ota_fault_server main "$T/pki/$PKI_OTA_CERT" "$T/pki/$PKI_OTA_KEY"
OTA_REPORT=$T/report.json OTA_CONF=$OTA_FAULT_CONF ota_daemon "https://localhost:$FAULT_PORT/ok/none.bin"
for i in "${!faults[@]}"; do
        ota_set_url "${OTA_IDS[$i]}" "https://localhost:$FAULT_PORT/${faults[$i]}/fw.bin"
done
ota_run
ids=("${OTA_IDS[@]}")

ota_expect_final "${ids[0]}" 'ESP_FAIL: HTTP status 404 \(0 bytes had arrived\)$'
ota_expect_requests main status-404 1

ota_expect_gave_up "${ids[1]}" 'ESP_FAIL: HTTP status 500' 3
ota_expect_requests main status-500 3

ota_expect_gave_up "${ids[2]}" 'ESP_FAIL: HTTP status 503' 3
ota_expect_requests main status-503 3
re="^/esp/${ids[2]}/log W \([0-9]+\) esp_https_ota: Download failed \(ESP_FAIL: HTTP status 503\);"
grep -qE "$re retry 1/2 in 1000 ms \(Retry-After: 1 s\)$" "$T/log.out" || fail "Retry-After: 1 was not honoured"
grep -qE "$re retry 2/2 in 2000 ms \(Retry-After: [0-9]{4} s, capped by the backoff maximum\)$" "$T/log.out" \
        || fail "an hour's Retry-After was not capped at retry_backoff_max_ms"

# the last attempt was cut at 20000 bytes again: the line says how far it got, of what
ota_expect_refused "${ids[3]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: .*\(gave up after 4 attempt\(s\)\) \(20000 of [0-9]+ bytes had arrived\)$'
grep -qE "^/esp/${ids[3]}/log W \([0-9]+\) esp_https_ota: The server did not resume \(ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE: HTTP status 416 .*\); restarting from byte 0" \
        "$T/log.out" || fail "the 416 was not named"
wait_count 20 "$T/fault-main.requests" ' path=/range-416/' 4 || fail "/range-416/: fewer than 4 requests"
got=$(ota_fault_requests main /range-416/ | sed -E 's/^conn=[0-9]+ //; s/ sent=.*//')
want="path=/range-416/fw.bin range=- status=200
path=/range-416/fw.bin range=bytes=20000- status=416
path=/range-416/fw.bin range=- status=200
path=/range-416/fw.bin range=- status=200"
[ "$got" = "$want" ] || { echo "$got" >&2; fail "/range-416/: not cut, 416, then twice from byte 0"; }

ota_expect_final "${ids[4]}" 'ESP_ERR_HTTP_MAX_REDIRECT: '
# one attempt: the request and the 10 redirects curl follows (HTTP_MAX_REDIRECTS)
wait_count 20 "$T/fault-main.requests" ' path=/redirect-loop2?/' 11 || fail "fewer than 11 requests in the loop"
[ "$(count_lines "$T/fault-main.requests" ' path=/redirect-loop2?/')" -eq 11 ] || fail "the loop was entered again"

ota_expect_final "${ids[5]}" "ESP_ERR_HTTP_INVALID_TRANSPORT: redirected \(HTTP status 302\) to 'http://localhost:$FAULT_PORT/ok/fw.bin': only https:// is allowed"
ota_expect_requests main redirect-http 1
grep -q ' path=/ok/' "$T/fault-main.requests" && fail "the http:// redirect was followed"

ota_expect_sessions_kept
stop_daemon
for id in "${ids[@]}"; do ota_expect_unbootable "$id"; done
ota_report_check "$T/report.json" "{'${ids[0]}': 'ESP_FAIL', '${ids[1]}': 'ESP_FAIL', '${ids[2]}': 'ESP_FAIL',
        '${ids[3]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED', '${ids[4]}': 'ESP_ERR_HTTP_MAX_REDIRECT',
        '${ids[5]}': 'ESP_ERR_HTTP_INVALID_TRANSPORT'}"
echo "ok: 404 final, 500 and 503 retried (Retry-After honoured and capped), 416 restarts, redirects refused"
