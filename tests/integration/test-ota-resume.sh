#!/usr/bin/env bash
# A download cut mid-body resumes where it stopped: the server drops the
# first connection after 100,000 of 262,144 bytes; the device retries with
# "Range: bytes=N-" (N = what it has on flash), gets 206 and finishes. The
# image in ota_1 is then byte-identical to the served file and boots.
source "$(dirname "$0")/ota-lib.sh"

cut=100000
ota_fleet 1
id=${OTA_IDS[0]}
ota_image big.bin 1.5.0 --size 262144
size=$(stat -c %s "$OTA_WWW/big.bin")
[ "$size" -gt $((cut * 2)) ] || fail "image too small ($size bytes)"
ota_cut_server "$T/pki" "$OTA_WWW" "$cut"
ota_daemon "https://localhost:$CUT_PORT/big.bin"
ota_run "$id"
ota_expect_installed "$id" 1.5.0

re="^/esp/$id/log I \([0-9]+\) esp_https_ota: Resuming the download at byte ([0-9]+) of $size \(HTTP 206\)"
line=$(grep -E "$re" "$T/log.out" | head -n 1) || fail "no resume line in the device log"
at=$(sed -nE "s/.*Resuming the download at byte ([0-9]+) of.*/\1/p" <<<"$line")
[ "$at" -ge 1024 ] && [ "$at" -le "$cut" ] || fail "resumed at byte $at, not within 1024..$cut"
grep -qE "^/esp/$id/log W \([0-9]+\) esp_https_ota: Download failed \(ESP_ERR_HTTP_" "$T/log.out" \
        || fail "the cut was not reported as a failed download"

# the server saw exactly: the cut GET, then one Range request from $at
cat "$T/cut-server.requests" >&2
[ "$(grep -c . "$T/cut-server.requests")" -eq 2 ] || fail "expected 2 requests"
sed -n 1p "$T/cut-server.requests" | grep -qx "/big.bin range=- status=200 sent=$cut (cut)" || fail "first request"
sed -n 2p "$T/cut-server.requests" | grep -qx "/big.bin range=bytes=$at- status=206 sent=$((size - at))" \
        || fail "second request is not a Range request from byte $at"
grep -qE "$id: OTA from '.*' done: version 1.5.0 in ota_1 \(2 request\(s\), $((cut + size - at)) bytes\)" \
        "$T/espfleetd.log" || fail "the outcome line does not count 2 requests and $((cut + size - at)) bytes"

stop_daemon
ota_expect_selected "$id" 1 ESP_OTA_IMG_VALID
"$ESPFLEET" flash export "$T/fleet/devices/$id" "$T/flash.bin" >>"$T/image.log" 2>&1 || fail "flash export"
cmp -n "$size" -i "$((0x1a0000)):0" "$T/flash.bin" "$OTA_WWW/big.bin" || fail "ota_1 differs from the served image"
echo "ok: cut download resumed at byte $at"
