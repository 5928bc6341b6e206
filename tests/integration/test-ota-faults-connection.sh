#!/usr/bin/env bash
# OTA server faults, the connection (README "OTA server faults"): one device
# per fault, all against tests/integration/fault-server.py at once.
#   reset:   20 kB of the body, then a TCP reset;
#   stall:   20 kB, then no byte at all (below ota.low_speed_limit for
#            ota.low_speed_time);
#   trickle: 20 kB, then one byte a second.
# Each is transient: ESP_ERR_HTTP_CONNECTION_CLOSED, retried up to
# ota.max_retries (2), every retry resumed with a Range where flash ended,
# then given up. 1.0.0 keeps running, ota_1 is left unbootable, and the
# report counts three ESP_ERR_HTTP_CONNECTION_CLOSED.
source "$(dirname "$0")/ota-lib.sh"

faults=(reset stall trickle)
ota_fleet ${#faults[@]}
ota_image fw.bin 2.0.0 --size 128K
ota_fault_server main "$T/pki/$PKI_OTA_CERT" "$T/pki/$PKI_OTA_KEY"
OTA_REPORT=$T/report.json OTA_CONF=$OTA_FAULT_CONF ota_daemon "https://localhost:$FAULT_PORT/ok/none.bin"
for i in "${!faults[@]}"; do
        ota_set_url "${OTA_IDS[$i]}" "https://localhost:$FAULT_PORT/${faults[$i]}/fw.bin"
done
ota_run

ota_expect_gave_up "${OTA_IDS[0]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: .*[Rr]eset by peer' 3
ota_expect_gave_up "${OTA_IDS[1]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: Operation too slow' 3
ota_expect_gave_up "${OTA_IDS[2]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: Operation too slow' 3
for f in "${faults[@]}"; do ota_expect_resumed main "$f" 3; done
grep -qE "^/esp/${OTA_IDS[0]}/log I \([0-9]+\) esp_https_ota: Resuming the download at byte [0-9]+ of [0-9]+ \(HTTP 206\)" \
        "$T/log.out" || fail "no resume line in the device log"

ota_expect_sessions_kept
stop_daemon
for id in "${OTA_IDS[@]}"; do ota_expect_unbootable "$id"; done
ota_report_check "$T/report.json" "{'${OTA_IDS[0]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED',
        '${OTA_IDS[1]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED', '${OTA_IDS[2]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED'}"
echo "ok: reset, stall and trickle retried with resume, then given up"
