#!/usr/bin/env bash
# An OTA that completes while the broker is down still reboots into the new
# image (issue #9 §4): esp_restart() does not wait for MQTT. The download is
# served slowly; the broker stops right after the OTA starts and comes back
# only once the image is written. The device then comes online running 2.0.0.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 1
id=${OTA_IDS[0]}
ota_image good.bin 2.0.0
SLOW_PORT=$(free_port)
# an HTTPS server that sends the image in 12 pieces, 0.4 s apart (~5 s)
python3 - "$T/pki/$PKI_OTA_CERT" "$T/pki/$PKI_OTA_KEY" "$OTA_WWW/good.bin" "$SLOW_PORT" >>"$T/slow-server.log" 2>&1 <<'PY' &
import socket, ssl, sys, time
cert, key, path, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.create_server(("127.0.0.1", port))
body = open(path, "rb").read()
while True:
    raw, _ = srv.accept()
    try:
        c = ctx.wrap_socket(raw, server_side=True)
        req = b""
        while b"\r\n\r\n" not in req:
            b = c.recv(4096)
            if not b:
                raise ConnectionError("no request")
            req += b
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        step = len(body) // 12 + 1
        for i in range(0, len(body), step):
            c.sendall(body[i:i + step])
            time.sleep(0.4)
        c.close()
    except Exception as e:
        print("slow server:", e, flush=True)
PY
_PIDS+=("$!")
wait_for 10 port_open "$SLOW_PORT" || fail "the slow server did not listen"
ota_daemon "https://localhost:$SLOW_PORT/good.bin" 'reconnect = { backoff_min_ms = 200; backoff_max_ms = 1000; };'
ota_run "$id"
stop_mosquitto
wait_count 60 "$T/espfleetd.log" "$id: OTA: 2.0.0 written to ota_1 .*rebooting" 1 || fail "the OTA did not complete"
# the device reboots now, without the broker: it tries to connect again from the new image
sleep 2
start_mosquitto "$T/pki" "$MQTT_PORT"
mqtt_sub_bg "$T/pki" "$T/log2.out" '/esp/+/log' '/esp/+/status'
wait_count 60 "$T/log2.out" "^/esp/$id/status \{\"state\":\"online\",\"version\":\"2.0.0\"\}" 1 \
        || { tail -n 5 "$T/log2.out" >&2; fail "$id came back without rebooting into 2.0.0"; }
# (the daemon's log: the device may publish its line before the new subscriber is in place)
wait_count 30 "$T/espfleetd.log" "$id: App 2.0.0 confirmed on the broker: marked valid" 1 \
        || fail "2.0.0 was not confirmed once online"
stop_daemon
echo "ok: an OTA done while the broker was down reboots into the new image"
