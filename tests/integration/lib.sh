# shellcheck shell=bash
# Helpers for the integration tests: real mosquitto (mTLS, free loopback
# port), real HTTPS servers (openssl s_server -WWW, nginx), the real daemon.
# Source it from a test-*.sh; everything it starts is stopped on exit.
set -euo pipefail

: "${ESPFLEET:?ESPFLEET must point at the espfleet binary}"
: "${ESPFLEETD:?ESPFLEETD must point at the espfleetd binary}"
: "${SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

# File names inside a PKI dir made by `espfleet pki init`.
PKI_CA=ca.crt
PKI_BROKER_CERT=broker.crt
PKI_BROKER_KEY=broker.key
PKI_OTA_CERT=ota.crt
PKI_OTA_KEY=ota.key
PKI_OPERATOR_CERT=operator.crt
PKI_OPERATOR_KEY=operator.key

T=${ESPFLEET_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/espfleet-it.XXXXXX")}
mkdir -p "$T"
_PIDS=()
_cleanup() {
        local rc=$?
        local p
        for p in "${_PIDS[@]}"; do
                kill -TERM "$p" 2>/dev/null || true
        done
        for p in "${_PIDS[@]}"; do
                timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
        done
        if [ "$rc" -eq 130 ]; then
                echo "# interrupted: everything stopped${KEEP_TMP:+, logs kept in $T}" >&2
        elif [ "$rc" -ne 0 ]; then
                echo "--- test failed (rc=$rc); logs from $T:" >&2
                local f
                for f in "$T"/*.log; do
                        [ -f "$f" ] || continue
                        echo "--- $f (last 40 lines)" >&2
                        tail -n 40 "$f" >&2
                done
        fi
        [ -n "${KEEP_TMP:-}" ] || rm -rf "$T"
        exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

# `producer | grep -q …` is a trap under pipefail: grep -q exits at the first
# match, the producer dies of SIGPIPE on its next write, and the pipeline
# fails at random. In the tests, -q reads all of its input instead.
grep() {
        local args=() quiet=0 a opts=1
        for a in "$@"; do
                [ "$a" = "--" ] && opts=0
                if [ "$opts" -eq 1 ] && [[ $a =~ ^-[a-zA-Z]+$ && $a == *q* ]]; then
                        quiet=1
                        a=${a//q/}
                        [ "$a" = "-" ] && continue
                fi
                args+=("$a")
        done
        if [ "$quiet" -eq 1 ]; then
                command grep "${args[@]}" >/dev/null
        else
                command grep "${args[@]}"
        fi
}

log() { echo "# $*" >&2; }
fail() { echo "FAIL: $*" >&2; exit 1; }

free_port() {
        python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# wait_for TIMEOUT_S CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
        local timeout=$1; shift
        local end=$((SECONDS + timeout))
        until "$@" >/dev/null 2>&1; do
                [ "$SECONDS" -lt "$end" ] || return 1
                sleep 0.2
        done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pki_init DIR: a fresh PKI for 127.0.0.1/localhost.
pki_init() {
        "$ESPFLEET" pki init "$1" >"$T/pki.log" 2>&1 || { cat "$T/pki.log" >&2; fail "espfleet pki init"; }
}

# provision FLEET PKI COUNT [ARGS...]
provision() {
        local fleet=$1 pki=$2 count=$3; shift 3
        "$ESPFLEET" provision "$fleet" --pki "$pki" --count "$count" "$@" >>"$T/provision.log" 2>&1 \
                || { tail -n 20 "$T/provision.log" >&2; fail "espfleet provision"; }
}

# start_mosquitto PKI [PORT] -> sets MQTT_PORT, MQTT_PID
# MOSQUITTO_EXTRA_CONF: more lines for its config (the benches raise limits).
# MOSQUITTO_ACL: the whole ACL file instead of the default one.
start_mosquitto() {
        local pki=$1
        MQTT_PORT=${2:-$(free_port)}
        if [ -n "${MOSQUITTO_ACL:-}" ]; then
                printf '%s\n' "$MOSQUITTO_ACL" >"$T/acl"
        else
        cat >"$T/acl" <<ACL
# every device (username = its certificate CN) owns /esp/<id>/#, reads the
# broadcast commands and may write the seed's shared log topic
pattern readwrite /esp/%u/#
pattern read /esp/update/#
pattern read /esp/restart
pattern write /esp/log

user operator
topic readwrite #
ACL
        fi
        cat >"$T/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous false
persistence false
user root
log_dest file $T/mosquitto.log
log_type error
log_type warning
log_type notice
connection_messages true
max_connections -1
acl_file $T/acl
listener $MQTT_PORT 127.0.0.1
cafile $pki/$PKI_CA
certfile $pki/$PKI_BROKER_CERT
keyfile $pki/$PKI_BROKER_KEY
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
${MOSQUITTO_EXTRA_CONF:-}
CONF
        mosquitto -c "$T/mosquitto.conf" >>"$T/mosquitto.log" 2>&1 &
        MQTT_PID=$!
        _PIDS+=("$MQTT_PID")
        wait_for 10 port_open "$MQTT_PORT" || fail "mosquitto did not listen on $MQTT_PORT"
}

stop_mosquitto() {
        kill -TERM "$MQTT_PID" 2>/dev/null || true
        timeout 10 tail --pid="$MQTT_PID" -f /dev/null || true
}

# mqtt_pub PKI TOPIC PAYLOAD [ARGS]: as the operator, like the secure_esp README.
mqtt_pub() {
        local pki=$1 topic=$2 payload=$3; shift 3
        mosquitto_pub -h localhost -p "$MQTT_PORT" --cafile "$pki/$PKI_CA" \
                --cert "$pki/$PKI_OPERATOR_CERT" --key "$pki/$PKI_OPERATOR_KEY" \
                -t "$topic" -m "$payload" "$@"
}

# mqtt_sub_bg PKI OUTFILE TOPIC...: subscribes in the background (-v), until the test ends.
mqtt_sub_bg() {
        local pki=$1 out=$2; shift 2
        local args=()
        local t
        for t in "$@"; do args+=(-t "$t"); done
        mosquitto_sub -h localhost -p "$MQTT_PORT" --cafile "$pki/$PKI_CA" \
                --cert "$pki/$PKI_OPERATOR_CERT" --key "$pki/$PKI_OPERATOR_KEY" \
                -v "${args[@]}" >"$out" 2>>"$T/mosquitto_sub.log" &
        _PIDS+=("$!")
        sleep 0.5
}

# write_conf FILE FLEET [EXTRA CONFIG LINES...]: a daemon config for this broker.
# Its control socket is FILE without .conf, plus .control, unless a line sets
# control = {…} itself: two daemons (of one test, or of tests run side by
# side) must not meet on the default path, where the second would refuse to start.
write_conf() {
        local file=$1 fleet=$2; shift 2
        {
                echo "fleet_dir = \"$fleet\";"
                echo "broker = { host = \"localhost\"; port = $MQTT_PORT; };"
                local l own=0
                for l in "$@"; do
                        echo "$l"
                        [[ $l == control* ]] && own=1
                done
                [ "$own" -eq 1 ] || echo "control = { socket = \"${file%.conf}.control\"; };"
        } >"$file"
}

# start_daemon CONF [NAME] -> DAEMON_PID
start_daemon() {
        local conf=$1 name=${2:-espfleetd}
        "$ESPFLEETD" -c "$conf" >>"$T/$name.log" 2>&1 &
        DAEMON_PID=$!
        _PIDS+=("$DAEMON_PID")
}

stop_daemon() {
        local pid=${1:-$DAEMON_PID}
        kill -TERM "$pid" 2>/dev/null || true
        timeout 20 tail --pid="$pid" -f /dev/null || fail "espfleetd did not stop on SIGTERM"
}

# count_lines FILE REGEX
count_lines() { grep -cE "$2" "$1" 2>/dev/null || true; }

# wait_count TIMEOUT FILE REGEX N: until FILE has >= N lines matching REGEX.
wait_count() {
        local timeout=$1 file=$2 re=$3 n=$4
        local end=$((SECONDS + timeout))
        while [ "$(count_lines "$file" "$re")" -lt "$n" ]; do
                [ "$SECONDS" -lt "$end" ] || return 1
                sleep 0.3
        done
}

# start_notify_listener SOCKET OUT: a stand-in for systemd's notify socket;
# every datagram becomes one line of OUT ("READY=1 | STATUS=…").
start_notify_listener() {
        local sock=$1 out=$2
        python3 - "$sock" "$out" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as out:
    while True:
        out.write(s.recv(65536).decode(errors="replace").replace("\n", " | ") + "\n")
        out.flush()
PY
        _PIDS+=("$!")
        wait_for 5 test -S "$sock" || fail "notify listener did not start"
}

# start_s_server PKI DOCROOT -> OTA_PORT: `openssl s_server -WWW` exactly as
# the secure_esp README runs its update server.
start_s_server() {
        local pki=$1 root=$2
        OTA_PORT=$(free_port)
        (cd "$root" && exec openssl s_server -WWW -key "$pki/$PKI_OTA_KEY" -cert "$pki/$PKI_OTA_CERT" \
                -port "$OTA_PORT" -accept "$OTA_PORT" -quiet) >>"$T/s_server.log" 2>&1 &
        S_SERVER_PID=$!
        _PIDS+=("$S_SERVER_PID")
        wait_for 10 port_open "$OTA_PORT" || fail "s_server did not listen"
}

# start_nginx PKI DOCROOT -> NGINX_PORT (TLS, range requests, many connections)
start_nginx() {
        local pki=$1 root=$2
        NGINX_PORT=$(free_port)
        mkdir -p "$T/nginx"
        # nginx's workers run as an unprivileged user: they must reach the docroot
        chmod a+x "$T"
        cat >"$T/nginx/nginx.conf" <<NGX
daemon off;
worker_processes 2;
pid $T/nginx/nginx.pid;
error_log $T/nginx.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $pki/$PKI_OTA_CERT;
        ssl_certificate_key $pki/$PKI_OTA_KEY;
        root $root;
    }
}
NGX
        nginx -c "$T/nginx/nginx.conf" >>"$T/nginx.log" 2>&1 &
        NGINX_PID=$!
        _PIDS+=("$NGINX_PID")
        wait_for 10 port_open "$NGINX_PORT" || fail "nginx did not listen"
}
