# shellcheck shell=bash
# Helpers shared by the OTA scenarios (tests/integration/test-ota-*.sh), on
# top of lib.sh: a provisioned fleet on a real mosquitto, firmware images
# built and signed with the espfleet CLI, served by `openssl s_server -WWW`
# or nginx, and the daemon. The lines checked are the ones src/ota emits
# (esp_https_ota / boot tags), as the device publishes them on its log topic.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OTA_WWW=$T/www
mkdir -p "$OTA_WWW"

# ota_fleet N [PROVISION ARGS...]: PKI, N devices, broker, log subscriber -> $T/log.out
ota_fleet() {
        local n=$1; shift
        pki_init "$T/pki"
        provision "$T/fleet" "$T/pki" "$n" "$@"
        start_mosquitto "$T/pki"
        mqtt_sub_bg "$T/pki" "$T/log.out" '/esp/+/log' '/esp/+/status'
        mapfile -t OTA_IDS < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)
}

# ota_image FILE VERSION [BUILD ARGS...]: a firmware signed with the fleet key in $OTA_WWW
ota_image() {
        local file=$1 version=$2; shift 2
        "$ESPFLEET" image build --version "$version" "$@" -o "$OTA_WWW/$file" >>"$T/image.log" 2>&1 \
                || { cat "$T/image.log" >&2; fail "image build $file"; }
        "$ESPFLEET" image sign --key "$T/pki/secure_boot_signing_key.pem" "$OTA_WWW/$file" >>"$T/image.log" 2>&1 \
                || { cat "$T/image.log" >&2; fail "image sign $file"; }
}

# ota_daemon URL [EXTRA CONFIG LINES...]: the daemon, devices online.
# OTA_CONF: extra settings inside ota = { … } (e.g. "start_jitter_ms = 500;").
# OTA_REPORT: a file for the daemon's --report (written when it stops).
ota_daemon() {
        local url=$1; shift
        write_conf "$T/espfleetd.conf" "$T/fleet" 'device = { boot_time_ms = 100; };' \
                "ota = { default_url = \"$url\"; ${OTA_CONF:-confirm_timeout = 5;} };" "$@"
        if [ -n "${OTA_REPORT:-}" ]; then
                "$ESPFLEETD" -c "$T/espfleetd.conf" --report "$OTA_REPORT" >>"$T/espfleetd.log" 2>&1 &
                DAEMON_PID=$!
                _PIDS+=("$DAEMON_PID")
        else
                start_daemon "$T/espfleetd.conf"
        fi
        local end=$((SECONDS + 90))
        while [ "$(count_lines "$T/log.out" 'MQTT_EVENT_CONNECTED')" -lt "${#OTA_IDS[@]}" ]; do
                kill -0 "$DAEMON_PID" 2>/dev/null || fail "espfleetd exited"
                [ "$SECONDS" -lt "$end" ] || fail "devices did not come online"
                sleep 0.3
        done
}

# ota_run [ID]: /esp/update/run (broadcast without ID); the device must
# start its OTA.
ota_run() {
        local topic=/esp/update/run
        [ $# -eq 0 ] || topic=/esp/$1/update/run
        mqtt_pub "$T/pki" "$topic" ""
        local end=$((SECONDS + 10))
        while [ "$SECONDS" -lt "$end" ]; do
                grep -qE 'esp_https_ota: Starting OTA' "$T/log.out" && return 0
                sleep 0.3
        done
        fail "no 'Starting OTA' line after $topic"
}

# ota_expect_refused ID REGEX [VERSION]: the OTA of ID fails with a line
# matching REGEX (final: the session ended), the daemon logs the outcome,
# and the device keeps running VERSION (default 1.0.0) per its retained
# status. The scripts also check otadata once the daemon is stopped.
ota_expect_refused() {
        local id=$1 re=$2 version=${3:-1.0.0}
        wait_count 60 "$T/log.out" "^/esp/$id/log E \([0-9]+\) esp_https_ota: ESP_HTTPS_OTA upgrade failed: $re" 1 \
                || fail "$id: no 'upgrade failed: $re' line"
        grep -qE "$id: OTA from '.*' failed: " "$T/espfleetd.log" || fail "$id: no outcome line in the daemon log"
        ota_expect_status "$id" online "$version"
}

# ota_expect_status ID STATE VERSION: the last retained status of ID.
ota_expect_status() {
        local id=$1 state=$2 version=$3 last
        last=$(grep -E "^/esp/$id/status " "$T/log.out" | tail -n 1)
        [ "$last" = "/esp/$id/status {\"state\":\"$state\",\"version\":\"$version\"}" ] \
                || fail "$id: last status is '$last', expected $state/$version"
}

# ota_expect_installed ID VERSION [TIMEOUT]: the daemon's per-device outcome
# line, the reboot into VERSION (bootloader lines, verified signature), the
# new app back on the broker and marked valid, and the retained status.
ota_expect_installed() {
        local id=$1 version=$2 timeout=${3:-60}
        wait_count "$timeout" "$T/espfleetd.log" "$id: OTA from '.*' done: version $version in ota_[01] " 1 \
                || fail "$id: no 'OTA … done: version $version' outcome line in the daemon log"
        wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) boot: App version: $version " 1 \
                || fail "$id: did not reboot into $version"
        wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) esp_ota_ops: App $version marked valid, rollback cancelled" 1 \
                || fail "$id: $version was not marked valid on the broker"
        ota_expect_status "$id" online "$version"
}

# ota_otadata ID: 'espfleet flash info' of a device (otadata part), daemon stopped.
ota_otadata() {
        "$ESPFLEET" flash info "$T/fleet/devices/$1" 2>&1 | sed -n '/^otadata/,/selected/p'
}

# ota_selected ID: "<slot> <state>" of the otadata entry the bootloader selects
# (from 'espfleet flash info'; the daemon must be stopped), e.g. "1 ESP_OTA_IMG_VALID".
ota_selected() {
        local info entry slot
        info=$("$ESPFLEET" flash info "$T/fleet/devices/$1") || fail "espfleet flash info $1"
        entry=$(sed -nE 's/^ *selected: entry ([01]) -> ota_([0-9]+).*/\1 \2/p' <<<"$info")
        [ -n "$entry" ] || { echo "$info" >&2; fail "$1: no otadata selection in 'flash info'"; }
        slot=${entry#* }
        entry=${entry% *}
        echo "$slot $(sed -nE "s/^ *entry $entry: seq [0-9]+, state ([A-Z_]+).*/\1/p" <<<"$info")"
}

# ota_expect_selected ID SLOT STATE: e.g. ota_expect_selected esp-1 1 ESP_OTA_IMG_VALID
ota_expect_selected() {
        local got
        got=$(ota_selected "$1")
        [ "$got" = "$2 $3" ] || fail "$1: otadata selects '$got', expected '$2 $3'"
}

# ota_set_url ID URL: the device's own URL in NVS (update/url + use_url = 1).
ota_set_url() {
        local id=$1 url=$2
        local n
        n=$(count_lines "$T/log.out" "^/esp/$id/log .*use_url")
        mqtt_pub "$T/pki" "/esp/$id/update/url" "$url"
        mqtt_pub "$T/pki" "/esp/$id/update/use_url" 1
        wait_count 10 "$T/log.out" "^/esp/$id/log .*use_url" $((n + 1)) || fail "$id: use_url not acknowledged"
}

# ota_nginx PKI DOCROOT PORT [EXTRA http{} DIRECTIVES...] -> NGINX_PID: nginx
# over TLS on a given port (so that a test can restart it there), with an
# access log of status, range and bytes sent in $T/nginx-access.log.
ota_nginx() {
        local pki=$1 root=$2 port=$3; shift 3
        local d
        mkdir -p "$T/nginx-$port"
        # nginx's workers run as nobody: let them reach the docroot inside $T
        # (mktemp -d makes it 0700); the files themselves stay as they are
        chmod a+x "$T"
        chmod a+rx "$root"
        {
                echo "daemon off;"
                echo "worker_processes 2;"
                echo "pid $T/nginx-$port/nginx.pid;"
                echo "error_log $T/nginx.log warn;"
                echo "events { worker_connections 8192; }"
                echo "http {"
                echo "    log_format ota '\$status \"\$http_range\" \$body_bytes_sent';"
                echo "    access_log $T/nginx-access.log ota;"
                for d in client_body proxy fastcgi uwsgi scgi; do
                        echo "    ${d}_temp_path $T/nginx-$port/$d;"
                done
                echo "    default_type application/octet-stream;"
                echo "    sendfile on;"
                for d in "$@"; do echo "    $d"; done
                echo "    server {"
                echo "        listen 127.0.0.1:$port ssl;"
                echo "        ssl_certificate $pki/$PKI_OTA_CERT;"
                echo "        ssl_certificate_key $pki/$PKI_OTA_KEY;"
                echo "        root $root;"
                echo "    }"
                echo "}"
        } >"$T/nginx-$port/nginx.conf"
        nginx -c "$T/nginx-$port/nginx.conf" >>"$T/nginx.log" 2>&1 &
        NGINX_PID=$!
        _PIDS+=("$NGINX_PID")
        wait_for 10 port_open "$port" || fail "nginx did not listen on $port"
}

# ota_cut_server PKI DOCROOT CUT -> CUT_PORT: an HTTPS server (Python ssl) that
# cuts the first full GET of each file after CUT body bytes (the TCP
# connection just closes, no TLS close_notify) and answers Range requests
# "bytes=N-" with 206. One line per request in $T/cut-server.requests:
# "<path> range=<Range header or -> status=<code> sent=<body bytes>".
ota_cut_server() {
        local pki=$1 root=$2 cut=$3
        CUT_PORT=$(free_port)
        python3 - "$pki/$PKI_OTA_CERT" "$pki/$PKI_OTA_KEY" "$root" "$CUT_PORT" "$cut" \
                "$T/cut-server.requests" >>"$T/cut-server.log" 2>&1 <<'PY' &
import os, re, socket, ssl, sys
cert, key, root, port, cut, reqlog = sys.argv[1:7]
port, cut = int(port), int(cut)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.create_server(("127.0.0.1", port))
cut_done = set()
def note(line):
    with open(reqlog, "a") as f:
        f.write(line + "\n")
while True:
    raw, _ = srv.accept()
    try:
        c = ctx.wrap_socket(raw, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            b = c.recv(4096)
            if not b:
                raise ConnectionError("no request")
            head += b
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split()[1]
        hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        fn = os.path.join(root, os.path.basename(path))
        if not os.path.isfile(fn):
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            note(f"{path} range=- status=404 sent=0")
            c.close()
            continue
        data = open(fn, "rb").read()
        rng = hdrs.get("range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and int(m.group(1)) < len(data):
            start = int(m.group(1))
            body = data[start:]
            c.sendall((f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(body)}\r\n"
                       f"Content-Range: bytes {start}-{len(data) - 1}/{len(data)}\r\n"
                       "Connection: close\r\n\r\n").encode())
            c.sendall(body)
            note(f"{path} range={rng} status=206 sent={len(body)}")
            c.close()
            continue
        c.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
        if path not in cut_done and cut < len(data):
            cut_done.add(path)
            c.sendall(data[:cut])
            note(f"{path} range={rng or '-'} status=200 sent={cut} (cut)")
            c.shutdown(socket.SHUT_RDWR)   # drop the connection mid-body: FIN, no close_notify
            c.close()
            continue
        c.sendall(data)
        note(f"{path} range={rng or '-'} status=200 sent={len(data)}")
        c.close()
    except (OSError, ConnectionError, ssl.SSLError) as e:
        print("cut-server:", e, flush=True)
        try:
            raw.close()
        except OSError:
            pass
PY
        _PIDS+=("$!")
        wait_for 10 port_open "$CUT_PORT" || fail "the cutting server did not listen"
}

# ota_fault_server NAME CERT KEY [ARGS...] -> FAULT_PORT: tests/integration/
# fault-server.py over TLS with CERT/KEY, serving $OTA_WWW as /FAULT/FILE
# (the faults are listed at the top of fault-server.py). ARGS: --mode alert.
# Its port is the one it bound (no race for a free port); one line per
# connection in $T/fault-NAME.requests, the first naming the seed of its
# random offsets: FAULT_SEED=N in the environment replays a run.
ota_fault_server() {
        local name=$1 cert=$2 key=$3; shift 3
        local portfile=$T/fault-$name.port
        rm -f "$portfile"
        python3 "$SOURCE_DIR/tests/integration/fault-server.py" --cert "$cert" --key "$key" --root "$OTA_WWW" \
                --log "$T/fault-$name.requests" --port-file "$portfile" ${FAULT_SEED:+--seed "$FAULT_SEED"} "$@" \
                >>"$T/fault-$name.log" 2>&1 &
        _PIDS+=("$!")
        # written once it listens (no probing connection to show in its log)
        wait_for 10 test -s "$portfile" || fail "fault server $name did not start"
        FAULT_PORT=$(cat "$portfile")
}

# The daemon settings of the fault tests: two retries, short backoffs (the
# 503 test needs Retry-After: 1 s below the cap and an hour above it), and a
# stall is a transfer below 10 kB/s for 2 s (a healthy one runs at MB/s on
# loopback; curl averages over up to 5 s, so 20 kB then nothing trips it
# within a few seconds).
OTA_FAULT_CONF='confirm_timeout = 5; max_retries = 2; retry_backoff_min_ms = 200; retry_backoff_max_ms = 2000;'
OTA_FAULT_CONF+=' low_speed_limit = 10000; low_speed_time = 2;'

# ota_fault_requests NAME PATH_REGEX: the lines of fault server NAME whose
# path matches (one per request), e.g. ota_fault_requests main '/reset/'.
ota_fault_requests() {
        grep -E " path=$2" "$T/fault-$1.requests" || true
}

# ota_fault_connections NAME: every connection fault server NAME accepted.
ota_fault_connections() {
        grep -E '^conn=' "$T/fault-$1.requests" || true
}

# ota_expect_resumed NAME FAULT N: fault server NAME saw N requests for
# /FAULT/: the first from byte 0, each later one "Range: bytes=X-" answered
# 206, with X >= 1,024 and never going back (the device resumed where its
# flash ended). The server notes a request when it ends: wait for them.
ota_expect_resumed() {
        local name=$1 fault=$2 n=$3 prev=1024 x i lines
        wait_count 20 "$T/fault-$name.requests" " path=/$fault/" "$n" || fail "/$fault/: fewer than $n requests"
        mapfile -t lines < <(ota_fault_requests "$name" "/$fault/")
        [ "${#lines[@]}" -eq "$n" ] || fail "/$fault/: ${#lines[@]} requests, expected $n"
        [[ ${lines[0]} == *" range=- status=200 "* ]] || fail "/$fault/: the first request is not from byte 0: ${lines[0]}"
        for ((i = 1; i < n; i++)); do
                x=$(sed -nE 's/.* range=bytes=([0-9]+)- status=206 .*/\1/p' <<<"${lines[$i]}")
                [ -n "$x" ] && [ "$x" -ge "$prev" ] || fail "/$fault/: request $((i + 1)) did not resume at or past byte $prev: ${lines[$i]}"
                prev=$x
        done
}

# ota_expect_requests NAME FAULT N: exactly N requests for /FAULT/ (a final
# fault: N = 1), none of them with a Range.
ota_expect_requests() {
        local name=$1 fault=$2 n=$3 got
        wait_count 20 "$T/fault-$name.requests" " path=/$fault/" "$n" || fail "/$fault/: fewer than $n requests"
        got=$(ota_fault_requests "$name" "/$fault/")
        [ "$(grep -c . <<<"$got")" -eq "$n" ] || { echo "$got" >&2; fail "/$fault/: expected $n request(s)"; }
        grep -q ' range=bytes' <<<"$got" && { echo "$got" >&2; fail "/$fault/: a Range request"; }
        return 0
}

# ota_expect_gave_up ID REGEX ATTEMPTS: a transient fault, retried up to
# ota.max_retries: ATTEMPTS - 1 "Download failed (…); retry k/N" lines, then
# the final "upgrade failed: REGEX … (gave up after ATTEMPTS attempt(s))".
ota_expect_gave_up() {
        local id=$1 re=$2 attempts=$3
        ota_expect_refused "$id" "$re.*\(gave up after $attempts attempt\(s\)\)"
        local n
        n=$(count_lines "$T/log.out" "^/esp/$id/log W \([0-9]+\) esp_https_ota: Download failed \(")
        [ "$n" -eq $((attempts - 1)) ] || fail "$id: $n retry lines, expected $((attempts - 1))"
        grep -qE "$id: OTA failed: .* after $attempts request\(s\)" "$T/espfleetd.log" \
                || fail "$id: the daemon does not count $attempts requests"
}

# ota_expect_final ID REGEX: a final fault: "upgrade failed: REGEX" after one
# request, no retry line, no "gave up".
ota_expect_final() {
        local id=$1 re=$2
        ota_expect_refused "$id" "$re"
        grep -qE "^/esp/$id/log W \([0-9]+\) esp_https_ota: Download failed" "$T/log.out" \
                && fail "$id: a final failure was retried"
        grep -qE "^/esp/$id/log E .*upgrade failed: .*gave up after" "$T/log.out" \
                && fail "$id: a final failure says it gave up after retries"
        grep -qE "$id: OTA failed: .* after 1 request\(s\)" "$T/espfleetd.log" \
                || fail "$id: the daemon does not count exactly 1 request"
}

# ota_expect_sessions_kept: no device lost its broker session while the OTA
# servers misbehaved (a fault on the download must stay on the download).
ota_expect_sessions_kept() {
        if grep -E ': Connection to the broker lost' "$T/espfleetd.log" >&2; then
                fail "a device lost its broker session during the OTA faults"
        fi
}

# ota_expect_unbootable ID [SLOT]: the daemon stopped, otadata still selects
# ota_0 (VALID) and the passive slot (default ota_1) holds no bootable image:
# whatever part of a download reached it, its header sector is erased.
ota_expect_unbootable() {
        local id=$1 slot=${2:-1} off size
        ota_expect_selected "$id" 0 ESP_OTA_IMG_VALID
        read -r off size < <("$ESPFLEET" flash info "$T/fleet/devices/$id" \
                | sed -nE "s/^ +ota_$slot +app +ota_$slot +(0x[0-9a-f]+) +(0x[0-9a-f]+) .*/\1 \2/p")
        [ -n "$off" ] || fail "$id: no ota_$slot in 'flash info'"
        "$ESPFLEET" flash export "$T/fleet/devices/$id" "$T/$id-flash.bin" >>"$T/image.log" 2>&1 || fail "flash export $id"
        dd if="$T/$id-flash.bin" of="$T/$id-ota_$slot.bin" bs=4096 skip=$((off / 4096)) count=$((size / 4096)) \
                status=none || fail "dd ota_$slot of $id"
        rm -f "$T/$id-flash.bin"
        if "$ESPFLEET" image info "$T/$id-ota_$slot.bin" >"$T/$id-ota_$slot.info" 2>&1; then
                cat "$T/$id-ota_$slot.info" >&2
                fail "$id: ota_$slot holds a valid image"
        fi
        rm -f "$T/$id-ota_$slot.bin"
}

# ota_report_check REPORT.json DEVICES [COUNTERS]: Python dict literals. Each
# device's ota.result in the report is its entry in DEVICES (a failure also
# in its last_error, with 1.0.0 still running), and counters.ota_results
# equals COUNTERS (default: DEVICES' values counted), e.g.
#   ota_report_check "$T/report.json" "{'esp-0a0b0c': 'ESP_FAIL'}".
ota_report_check() {
        python3 - "$1" "$2" "${3:-}" <<'PY' || fail "the report does not match the devices' outcomes"
import ast, collections, json, sys
r = json.load(open(sys.argv[1]))
want = ast.literal_eval(sys.argv[2])
got = r["counters"]["ota_results"]
exp = ast.literal_eval(sys.argv[3]) if sys.argv[3] else dict(collections.Counter(want.values()))
assert got == exp, f"counters.ota_results: {got}, expected {exp}"
devs = {d["id"]: d for d in r["devices"]}
for i, res in want.items():
    assert devs[i]["ota"]["result"] == res, (i, devs[i]["ota"], res)
    if res != "ESP_OK":
        assert res in (devs[i]["last_error"] or ""), (i, devs[i]["last_error"])
        assert devs[i]["version"] == "1.0.0", (i, devs[i]["version"])
PY
}
