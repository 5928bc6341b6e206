#!/usr/bin/env bash
# OTA server faults, the body (README "OTA server faults"): one device per
# fault, all against tests/integration/fault-server.py at once, and one
# device that gets the file unharmed from the same server (it installs it:
# the server's own framing is sound).
#   cl-short:    Content-Length half the file: the body ends there and the
#                image is verified as it is: ESP_ERR_OTA_VALIDATE_FAILED, final;
#   cl-long:     4 kB more announced than sent: ESP_ERR_HTTP_CONNECTION_CLOSED,
#                retried with resume (the 206s lie the same way), given up;
#   chunked-bad: a chunk size that is not hex: ESP_ERR_HTTP_CONNECTION_CLOSED,
#                retried with resume, given up;
#   truncate:    each body cut at a random offset (clean TLS close):
#                ESP_ERR_HTTP_CONNECTION_CLOSED, retried with resume, given up;
#   flip:        one byte of the app flipped at a random offset:
#                ESP_ERR_OTA_VALIDATE_FAILED (checksum mismatch), final.
# The failed devices keep running 1.0.0 with ota_1 unbootable; the report
# counts each outcome.
source "$(dirname "$0")/ota-lib.sh"

faults=(cl-short cl-long chunked-bad truncate flip ok)
ota_fleet ${#faults[@]}
ota_image fw.bin 2.0.0 --size 128K
size=$(stat -c %s "$OTA_WWW/fw.bin")
ota_fault_server main "$T/pki/$PKI_OTA_CERT" "$T/pki/$PKI_OTA_KEY"
OTA_REPORT=$T/report.json OTA_CONF=$OTA_FAULT_CONF ota_daemon "https://localhost:$FAULT_PORT/ok/none.bin"
for i in "${!faults[@]}"; do
        ota_set_url "${OTA_IDS[$i]}" "https://localhost:$FAULT_PORT/${faults[$i]}/fw.bin"
done
ota_run
ids=("${OTA_IDS[@]}")
seed=$(sed -nE 's/^listening .* seed=([0-9]+)$/\1/p' "$T/fault-main.requests")
log "fault server seed $seed (FAULT_SEED=$seed replays the random offsets)"

ota_expect_final "${ids[0]}" "ESP_ERR_OTA_VALIDATE_FAILED: .*truncated image: only $((size / 2)) bytes"
ota_expect_requests main cl-short 1

ota_expect_gave_up "${ids[1]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: transfer closed with 4096 bytes remaining' 3
ota_expect_resumed main cl-long 3

ota_expect_gave_up "${ids[2]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: .*chunked' 3
ota_expect_resumed main chunked-bad 3

ota_expect_gave_up "${ids[3]}" 'ESP_ERR_HTTP_CONNECTION_CLOSED: transfer closed with [0-9]+ bytes remaining' 3
ota_expect_resumed main truncate 3

# the flip lands in segment data: the image's XOR checksum catches it as soon
# as the checksum byte arrives, before the signature sector
ota_expect_final "${ids[4]}" 'ESP_ERR_OTA_VALIDATE_FAILED: invalid image: checksum mismatch'
ota_expect_requests main flip 1

ota_expect_installed "${ids[5]}" 2.0.0

ota_expect_sessions_kept
stop_daemon
for i in 0 1 2 3 4; do ota_expect_unbootable "${ids[$i]}"; done
ota_expect_selected "${ids[5]}" 1 ESP_OTA_IMG_VALID
ota_report_check "$T/report.json" "{'${ids[0]}': 'ESP_ERR_OTA_VALIDATE_FAILED',
        '${ids[1]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED', '${ids[2]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED',
        '${ids[3]}': 'ESP_ERR_HTTP_CONNECTION_CLOSED', '${ids[4]}': 'ESP_ERR_OTA_VALIDATE_FAILED', '${ids[5]}': 'ESP_OK'}"
echo "ok: short and long lengths, broken chunks, cut and flipped bodies"
