#!/usr/bin/env bash
# A few hundred devices over three workers (issue #16): every device online
# exactly once (one CONNECT each in the broker's log, one online status), the
# split is the one the config asks for (contiguous manifest ranges, equal
# shares), and each worker holds no more fds than its computed budget while
# each device really holds its socket (1 fd per device, fd-budget.h).
source "$(dirname "$0")/lib.sh"
N=${N:-300}
W=3
DL=4            # ota.max_concurrent: 2 fds each in the budget
RESERVED=64     # FD_RESERVED_PER_WORKER

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N" --key-pool 4
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'

write_conf "$T/espfleetd.conf" "$T/fleet" \
        "workers = $W;" \
        'ramp = { rate = 300.0; jitter = 0.0; };' \
        'reconnect = { connect_rate_max = 300.0; };' \
        'device = { boot_time_ms = 0; };' \
        "ota = { max_concurrent = $DL; };" \
        'log = { summary_interval = 1; };'
start_daemon "$T/espfleetd.conf"

online() { grep -E '"state":"online"' "$T/status.out" | cut -d' ' -f1 | sort -u | wc -l; }
all_online() { [ "$(online)" -ge "$N" ]; }
wait_for 240 all_online || fail "only $(online)/$N devices online"
sleep 2

# exactly once: one online status and one connection per device
[ "$(grep -cE '"state":"online"' "$T/status.out")" -eq "$N" ] \
        || fail "$(grep -cE '"state":"online"' "$T/status.out") online messages for $N devices"
conns=$(grep -oE 'New client connected from [^ ]+ as esp-[0-9a-f]{6}' "$T/mosquitto.log" | awk '{print $NF}')
[ "$(echo "$conns" | wc -l)" -eq "$N" ] || fail "$(echo "$conns" | wc -l) device connections for $N devices"
[ "$(echo "$conns" | sort -u | wc -l)" -eq "$N" ] || fail "a device connected twice"
grep -qE 'Worker [0-9]+ \(pid [0-9]+\) (exited|died)' "$T/espfleetd.log" && fail "a worker restarted"

# the split: W workers, contiguous ranges that cover 0..N-1 in equal shares
grep -qE "espfleetd: $N devices .*, $W worker\(s\)" "$T/espfleetd.log" || fail "the daemon did not plan $W workers"
next=0
for i in $(seq 0 $((W - 1))); do
        line=$(grep -oE "Worker $i: running [0-9]+ devices \(manifest positions [0-9]+\.\.[0-9]+\)" "$T/espfleetd.log" | head -n1)
        [ -n "$line" ] || fail "worker $i did not start"
        read -r cnt a b < <(echo "$line" | sed -E 's/.*running ([0-9]+) devices \(manifest positions ([0-9]+)\.\.([0-9]+)\)/\1 \2 \3/')
        [ "$cnt" -eq $((N / W)) ] || fail "worker $i runs $cnt devices, not $((N / W))"
        [ "$a" -eq "$next" ] && [ "$b" -eq $((a + cnt - 1)) ] || fail "worker $i has positions $a..$b, expected from $next"
        next=$((b + 1))
done
[ "$next" -eq "$N" ] || fail "the workers cover positions 0..$((next - 1)) of $N"

# fds: within the budget, and at least one per device (its socket)
budget=$((RESERVED + DL * 2 + N / W))
workers=$(pgrep -P "$DAEMON_PID" -f 'espfleetd --worker' || true)
[ "$(echo "$workers" | wc -w)" -eq "$W" ] || fail "expected $W worker processes, found: $workers"
for p in $workers; do
        fds=$(ls "/proc/$p/fd" | wc -l)
        socks=$(find "/proc/$p/fd" -lname 'socket:*' | wc -l)
        flash=$(find "/proc/$p/fd" -lname '*flash.bin' | wc -l)
        log "worker pid $p: $fds fds ($socks sockets, $flash flash images open), budget $budget"
        [ "$fds" -le "$budget" ] || fail "worker $p holds $fds fds, above its budget of $budget"
        [ "$socks" -ge $((N / W)) ] || fail "worker $p holds $socks sockets for $((N / W)) online devices"
        [ "$flash" -eq 0 ] || fail "worker $p keeps $flash idle flash images open"
done

stop_daemon
echo "PASS: $N devices over $W workers, each online once, fds within budget"
