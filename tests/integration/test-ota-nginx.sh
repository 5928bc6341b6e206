#!/usr/bin/env bash
# nginx over TLS, as OTA-server teams run it: 5 devices download a 1 MiB
# image at once (rate-limited so that the downloads overlap); nginx is
# stopped while they are mid-body and started again on the same port. Every
# device retries, resumes with "Range: bytes=N-" (nginx answers 206), reports
# 10 % steps, and boots 2.0.0, which is marked valid.
source "$(dirname "$0")/ota-lib.sh"

n=5
ota_fleet "$n"
ota_image fw.bin 2.0.0 --size 1048576
size=$(stat -c %s "$OTA_WWW/fw.bin")
port=$(free_port)
ota_nginx "$T/pki" "$OTA_WWW" "$port" 'limit_rate 300k;'
ota_daemon "https://localhost:$port/fw.bin"
ota_run

# all downloads under way, none finished: cut them all
wait_count 30 "$T/log.out" 'esp_https_ota: Image bytes written: .*\(30 %\)' "$n" || fail "the downloads did not reach 30 %"
grep -qE 'Image bytes written: .*\(100 %\)' "$T/log.out" && fail "a download finished before the cut (raise the image size)"
kill -TERM "$NGINX_PID"
timeout 10 tail --pid="$NGINX_PID" -f /dev/null || fail "nginx did not stop"
wait_count 30 "$T/log.out" 'esp_https_ota: Download failed \(ESP_ERR_HTTP_' "$n" || fail "not every device saw the cut"
ota_nginx "$T/pki" "$OTA_WWW" "$port" 'limit_rate 300k;'

for id in "${OTA_IDS[@]}"; do
        ota_expect_installed "$id" 2.0.0 60
        grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: Resuming the download at byte [1-9][0-9]* of $size \(HTTP 206\)" \
                "$T/log.out" || fail "$id: did not resume with a 206"
        # 100 % is left out: the lines published just before the reboot can
        # be lost (the device closes its connection before the PUBACKs; see
        # the outcome line in the daemon log instead)
        for p in 10 20 30 40 50 60 70 80 90; do
                grep -qE "^/esp/$id/log I \([0-9]+\) esp_https_ota: Image bytes written: [0-9]+ of $size \($p %\)" "$T/log.out" \
                        || fail "$id: no $p % progress line"
        done
        grep -qE "$id: OTA from '.*' done: version 2.0.0 in ota_1 \([2-4] request\(s\), [0-9]+ bytes\)" "$T/espfleetd.log" \
                || fail "$id: outcome line"
done
# nginx served the rest of each image as 206 ranges, not the whole file again
[ "$(grep -cE '^206 "bytes=[1-9][0-9]*-" [0-9]+$' "$T/nginx-access.log")" -ge "$n" ] \
        || { cat "$T/nginx-access.log" >&2; fail "nginx did not serve $n range requests"; }
full=$(grep -cE "^200 \"-\" $size\$" "$T/nginx-access.log" || true)
[ "$full" -eq 0 ] || fail "$full full downloads after the cut"

stop_daemon
for id in "${OTA_IDS[@]}"; do ota_expect_selected "$id" 1 ESP_OTA_IMG_VALID; done
echo "ok: $n devices updated from nginx across a server restart"
