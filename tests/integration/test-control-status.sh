#!/usr/bin/env bash
# The control socket of a running espfleetd and the verbs that use it:
# `espfleet status` (fleet and device, text and JSON), `espfleet command`
# (restart, power cut), `espfleet top` without a terminal; the socket's
# modes, bad requests answered without harm, a second daemon refused, the
# socket removed on exit, a stale one replaced, and the error without a daemon.
source "$(dirname "$0")/lib.sh"
N=5
S=$T/ctl/control        # its directory is missing: the daemon makes it

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
mapfile -t ids < <(tail -n +2 "$T/fleet/manifest.csv" | cut -d, -f2)
[ "${#ids[@]}" -eq "$N" ] || fail "manifest lists ${#ids[@]} devices, not $N"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'
write_conf "$T/espfleetd.conf" "$T/fleet" 'workers = 2;' 'device = { boot_time_ms = 100; };' \
        "control = { socket = \"$S\"; };"
start_daemon "$T/espfleetd.conf"

st() { "$ESPFLEET" status --socket "$S" "$@"; }
# jcheck EXPR: the JSON on stdin is d; fails unless the Python expression EXPR holds
jcheck() { python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$1"; }
fleet_is() { st --json | jcheck "$1"; }
device_is() { st "$1" --json | jcheck "$2"; }
# ctl REQUEST...: raw lines on one connection, one answer line printed per request
ctl() {
        python3 - "$S" "$@" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rwb")
for req in sys.argv[2:]:
    f.write(req.encode() + b"\n")
    f.flush()
    sys.stdout.write(f.readline().decode())
PY
}

wait_for 60 fleet_is "d['online'] == $N" || fail "status never showed $N devices online: $(st 2>&1 | head -n 3)"

# the socket: 0600 in a 0700 directory the daemon made
[ -S "$S" ] || fail "$S is not a socket"
[ "$(stat -c %a "$S")" = 600 ] || fail "socket mode is $(stat -c %a "$S"), not 600"
[ "$(stat -c %a "$T/ctl")" = 700 ] || fail "socket directory mode is $(stat -c %a "$T/ctl"), not 700"

# the fleet summary, as text
st >"$T/status.txt" || fail "espfleet status failed"
grep -qE "^Online +$N/$N\$" "$T/status.txt" || fail "status does not say $N/$N online: $(cat "$T/status.txt")"
grep -qE "^States +online $N\$" "$T/status.txt" || fail "status does not count $N online"
for id in "${ids[@]}"; do
        grep -qE "^  $id +[01] +online " "$T/status.txt" || fail "$id is not among the slowest connections"
done
grep -qE '^  \(none\)$' "$T/status.txt" || fail "a device is listed as failed on a healthy fleet"
# the same through -c CONFIG
"$ESPFLEET" status -c "$T/espfleetd.conf" | grep -qE "^Online +$N/$N\$" || fail "status -c CONFIG did not reach the daemon"
fleet_is "d['devices'] == $N and d['workers'] == 2 and d['histograms']['connect']['count'] >= $N" \
        || fail "status JSON: devices, workers or connect histogram wrong"

# one device, as JSON and as text
one=${ids[0]} two=${ids[1]}
st "$one" --json >"$T/one.json" || fail "status $one --json failed"
jcheck "d['id'] == '$one' and d['state'] == 'online' and d['reboots'] == 0 and d['connects'] == 1" <"$T/one.json" \
        || fail "status $one --json: $(cat "$T/one.json")"
st "$one" | grep -qE '^  State +online since ' || fail "status $one does not say online"
if st esp-ffffff 2>"$T/nodev.err"; then fail "status of an unknown device succeeded"; fi
grep -q "no device 'esp-ffffff' in this daemon" "$T/nodev.err" || fail "unknown device: $(cat "$T/nodev.err")"

# restart: that device reboots once and comes back; no other one does
out=$("$ESPFLEET" command restart "$one" --socket "$S" 2>&1) || true
[ "$out" = "restart: sent to 1 device" ] || fail "command restart: $out"
wait_for 30 device_is "$one" "d['reboots'] == 1 and d['state'] == 'online' and d['connects'] == 2" \
        || fail "$one did not reboot and come back: $(st "$one" --json)"
fleet_is "sum(x['reboots'] for x in d['slowest']) == 1 and d['counters']['reboots'] == 1" \
        || fail "the restart reached more than $one"

# power cut: no goodbye, so the broker publishes the device's will
[ "$(count_lines "$T/status.out" "^/esp/$two/status .*\"state\":\"offline\"")" -eq 0 ] \
        || fail "$two was offline before the power cut"
"$ESPFLEET" command power-cut "$two" --socket "$S" | grep -qx 'power-cut: sent to 1 device' || fail "command power-cut"
wait_count 20 "$T/status.out" "^/esp/$two/status \{\"state\":\"offline\"" 1 || fail "no will of $two after the power cut"
wait_for 30 device_is "$two" "d['reboots'] == 1 and d['state'] == 'online'" \
        || fail "$two did not boot again after the power cut: $(st "$two" --json)"
fleet_is "d['counters']['disconnects'].get('power_cut') == 1" || fail "the power cut is not counted as one"

# top without a terminal: one frame, then exit
timeout 20 "$ESPFLEET" top --socket "$S" --interval 0.2 >"$T/top.out" || fail "top without a terminal failed (rc $?)"
[ "$(count_lines "$T/top.out" '^espfleet top - ')" -eq 1 ] || fail "top printed $(count_lines "$T/top.out" '^espfleet top - ') frames"
grep -qE "^Online +$N/$N\$" "$T/top.out" || fail "top's frame lacks the online count"

# bad requests get an error answer, on a connection that goes on
ctl 'this is not json' '{"method":"frobnicate"}' '{"method":"device","id":"esp-ffffff"}' \
        '{"method":"command","action":"explode","all":true}' \
        '{"method":"command","action":"restart","ids":["esp-ffffff"]}' \
        '{"method":"command","action":"restart","all":true,"range":[0,1]}' \
        '{"method":"command","action":"restart","range":5}' \
        '{"method":"command","action":"restart","ids":"esp-ffffff"}' '[1, 2]' \
        '{"method":"status"}' >"$T/bad.out" || fail "the raw requests got no answers"
python3 - "$T/bad.out" "$N" <<'PY' || fail "bad requests: $(cat "$T/bad.out")"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
assert len(a) == 10, len(a)
assert "not JSON" in a[0]["error"], a[0]
assert "unknown method 'frobnicate'" in a[1]["error"], a[1]
assert "no device 'esp-ffffff'" in a[2]["error"], a[2]
assert "unknown action 'explode'" in a[3]["error"], a[3]
assert "no device 'esp-ffffff'" in a[4]["error"], a[4]
assert "exactly one of" in a[5]["error"], a[5]
assert "\"range\" is [first, last]" in a[6]["error"], a[6]
assert "non-empty array" in a[7]["error"], a[7]
assert "a request is a JSON object" in a[8]["error"], a[8]
assert "error" not in a[9] and a[9]["online"] == int(sys.argv[2]), a[9]
PY
# a request past 64 KiB: an error, then the daemon hangs up
python3 - "$S" <<'PY' || fail "an over-long request was not refused"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b'{"method":"' + b"x" * 70000)
f = s.makefile("rb")
a = json.loads(f.readline())
assert "longer than 65536" in a["error"], a
# closed with our extra bytes unread: Linux reports that as a reset, after the answer
try:
    rest = f.read()
except ConnectionResetError:
    rest = b""
assert rest == b"", "more than one answer"
PY
fleet_is "d['online'] == $N and d['counters']['reboots'] == 2" || fail "the daemon changed or stopped after the bad requests"

# a second daemon on the same socket refuses to start; the first goes on
write_conf "$T/second.conf" "$T/fleet" 'device = { boot_time_ms = 100; };' "control = { socket = \"$S\"; };"
if timeout 30 "$ESPFLEETD" -c "$T/second.conf" >"$T/second.log" 2>&1; then fail "a second daemon started on $S"; fi
grep -q "control socket '$S': another espfleetd answers on it" "$T/second.log" \
        || fail "the second daemon did not say why: $(tail -n 3 "$T/second.log")"
fleet_is "d['online'] == $N" || fail "the first daemon stopped answering after the second one left"

# stopped: the socket is gone, and the CLI says so clearly
stop_daemon
[ ! -e "$S" ] || fail "the socket is still there after the daemon stopped"
rc=0
st 2>"$T/down.err" >/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "status without a daemon: exit code $rc, not 1"
grep -qxF "espfleet: cannot reach espfleetd at $S: No such file or directory (is espfleetd running? use --socket or -c CONFIG)" \
        "$T/down.err" || fail "status without a daemon: $(cat "$T/down.err")"

# a stale socket (a daemon killed without cleaning up) is replaced
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$S"
[ -S "$S" ] || fail "no stale socket made"
rc=0
st 2>"$T/stale.err" >/dev/null || rc=$?
[ "$rc" -eq 1 ] && grep -q 'Connection refused' "$T/stale.err" || fail "status on a stale socket: rc $rc, $(cat "$T/stale.err")"
start_daemon "$T/espfleetd.conf" espfleetd2
wait_for 60 fleet_is "d['online'] == $N" || fail "the daemon did not come up on the stale socket's path"
grep -q "Control socket $S was left by a daemon that is gone: replacing it" "$T/espfleetd2.log" \
        || fail "the stale socket was not reported as replaced"
stop_daemon
[ ! -e "$S" ] || fail "the socket is still there after the second run"
echo "ok: control socket, status, device, command restart/power-cut, top, bad requests, refusal, cleanup"
