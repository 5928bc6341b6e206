#!/usr/bin/env bash
# OTA server faults, TLS (README "OTA server faults"): one device per fault,
# each against its own tests/integration/fault-server.py, the odd
# certificates made here with openssl.
#   wrong-host: signed by the fleet CA for ota.example.com only;
#   expired:    signed by the fleet CA for localhost, valid in January 2020;
#   other-ca:   for localhost, signed by a CA the devices do not know;
#   alert:      a fatal handshake_failure alert in reply to the ClientHello.
# All are ESP_ERR_HTTP_CONNECT. A certificate the device refuses is final
# (one connection: the next one meets the same certificate); the alert is a
# failed handshake like a refused connection, retried up to ota.max_retries.
# No device loses its broker session over it (curl once left OpenSSL errors
# on the worker thread's queue, and libmosquitto took them for its own),
# 1.0.0 keeps running, ota_1 is never written, and the report counts four
# ESP_ERR_HTTP_CONNECT.
source "$(dirname "$0")/ota-lib.sh"

ota_fleet 4
ids=("${OTA_IDS[@]}")
ota_image fw.bin 2.0.0

# odd_cert NAME CN SAN CA_CRT CA_KEY [STARTDATE ENDDATE] -> $T/odd/NAME.{crt,key}
mkdir -p "$T/odd/db"
: >"$T/odd/db/index.txt"
echo 01 >"$T/odd/db/serial"
cat >"$T/odd/ca.cnf" <<CNF
[ca]
default_ca = odd
[odd]
database = $T/odd/db/index.txt
new_certs_dir = $T/odd/db
serial = $T/odd/db/serial
default_md = sha256
default_days = 30
policy = any
unique_subject = no
[any]
commonName = supplied
CNF
odd_cert() {
        local name=$1 cn=$2 san=$3 ca_crt=$4 ca_key=$5 dates=()
        [ $# -lt 7 ] || dates=(-startdate "$6" -enddate "$7")
        printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
                "$san" >"$T/odd/$name.ext"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/odd/$name.key" \
                -subj "/O=espfleet/CN=$cn" -out "$T/odd/$name.csr" >>"$T/openssl.log" 2>&1 || fail "openssl req $name"
        openssl ca -batch -notext -config "$T/odd/ca.cnf" -cert "$ca_crt" -keyfile "$ca_key" -in "$T/odd/$name.csr" \
                -out "$T/odd/$name.crt" -extfile "$T/odd/$name.ext" "${dates[@]}" >>"$T/openssl.log" 2>&1 \
                || fail "openssl ca $name"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/odd/foreign-ca.key" \
        -out "$T/odd/foreign-ca.crt" -subj "/O=elsewhere/CN=another CA" -days 30 >>"$T/openssl.log" 2>&1 || fail "foreign CA"
odd_cert wrong-host ota.example.com DNS:ota.example.com "$T/pki/$PKI_CA" "$T/pki/ca.key"
odd_cert expired localhost DNS:localhost,IP:127.0.0.1 "$T/pki/$PKI_CA" "$T/pki/ca.key" 20200101000000Z 20200201000000Z
odd_cert other-ca localhost DNS:localhost,IP:127.0.0.1 "$T/odd/foreign-ca.crt" "$T/odd/foreign-ca.key"
# each certificate is odd in the one way it is meant to be
openssl verify -CAfile "$T/pki/$PKI_CA" -verify_hostname localhost "$T/odd/wrong-host.crt" >>"$T/openssl.log" 2>&1 \
        && fail "wrong-host.crt verifies for localhost"
openssl verify -CAfile "$T/pki/$PKI_CA" -verify_hostname ota.example.com "$T/odd/wrong-host.crt" >>"$T/openssl.log" 2>&1 \
        || fail "wrong-host.crt does not verify for its own name"
out=$(openssl verify -CAfile "$T/pki/$PKI_CA" "$T/odd/expired.crt" 2>&1 || true)
grep -qE '^error 10 at 0 depth lookup: certificate has expired' <<<"$out" || { echo "$out" >&2; fail "expired.crt has not expired"; }
openssl verify -CAfile "$T/pki/$PKI_CA" -no_check_time -verify_hostname localhost "$T/odd/expired.crt" \
        >>"$T/openssl.log" 2>&1 || fail "expired.crt is odd in more than its dates"
openssl verify -CAfile "$T/odd/foreign-ca.crt" "$T/odd/other-ca.crt" >>"$T/openssl.log" 2>&1 \
        || fail "other-ca.crt does not verify against its own CA"

ports=()
for f in wrong-host expired other-ca; do
        ota_fault_server "$f" "$T/odd/$f.crt" "$T/odd/$f.key"
        ports+=("$FAULT_PORT")
done
ota_fault_server alert "$T/pki/$PKI_OTA_CERT" "$T/pki/$PKI_OTA_KEY" --mode alert
ports+=("$FAULT_PORT")
OTA_REPORT=$T/report.json OTA_CONF=$OTA_FAULT_CONF ota_daemon "https://localhost:${ports[3]}/ok/none.bin"
for i in 0 1 2 3; do ota_set_url "${ids[$i]}" "https://localhost:${ports[$i]}/ok/fw.bin"; done
ota_run

ota_expect_final "${ids[0]}" "ESP_ERR_HTTP_CONNECT: .*no alternative certificate subject name matches target host name 'localhost'"
ota_expect_final "${ids[1]}" 'ESP_ERR_HTTP_CONNECT: SSL certificate problem: certificate has expired'
ota_expect_final "${ids[2]}" 'ESP_ERR_HTTP_CONNECT: SSL certificate problem: unable to get local issuer certificate'
ota_expect_gave_up "${ids[3]}" 'ESP_ERR_HTTP_CONNECT: .*handshake failure' 3
for f in wrong-host expired other-ca; do
        wait_count 20 "$T/fault-$f.requests" '^conn=' 1 || fail "$f: no connection"
        [ "$(ota_fault_connections "$f" | grep -c .)" -eq 1 ] || { cat "$T/fault-$f.requests" >&2; fail "$f: connected again"; }
        grep -q ' path=' "$T/fault-$f.requests" && fail "$f: a request was sent over an unverified connection"
done
wait_count 20 "$T/fault-alert.requests" '^conn=[0-9]+ handshake-alert$' 3 || fail "alert: fewer than 3 handshakes"
[ "$(ota_fault_connections alert | grep -c .)" -eq 3 ] || fail "alert: not 3 connections"

ota_expect_sessions_kept
stop_daemon
for id in "${ids[@]}"; do ota_expect_unbootable "$id"; done
ota_report_check "$T/report.json" "{'${ids[0]}': 'ESP_ERR_HTTP_CONNECT', '${ids[1]}': 'ESP_ERR_HTTP_CONNECT',
        '${ids[2]}': 'ESP_ERR_HTTP_CONNECT', '${ids[3]}': 'ESP_ERR_HTTP_CONNECT'}"
echo "ok: wrong host, expired, foreign CA refused at once; a handshake alert retried"
