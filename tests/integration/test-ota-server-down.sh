#!/usr/bin/env bash
# With no server on the port, the device retries with backoff and then
# reports ESP_ERR_HTTP_CONNECT.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_daemon "https://localhost:$(free_port)/fw.bin"
ota_run "$id"
wait_count 120 "$T/log.out" "^/esp/$id/log W \([0-9]+\) esp_https_ota: Download failed \(ESP_ERR_HTTP_CONNECT" 1 \
        || fail "no retry line"
ota_expect_refused "$id" 'ESP_ERR_HTTP_CONNECT.*gave up after'
echo "ok: server down -> retries -> error"
