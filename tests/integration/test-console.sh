#!/usr/bin/env bash
# The status line ("online N/T (x %)  rate  ETA") shows on a terminal while
# the fleet comes online, the workers' log lines pass through the
# supervisor intact (each on its own line, never inside the status line),
# and there is no status line when stderr is not a terminal or under
# systemd (JOURNAL_STREAM set).
source "$(dirname "$0")/lib.sh"
N=20
command -v script >/dev/null || fail "script(1) is not installed (Debian bsdutils)"

pki_init "$T/pki"
provision "$T/fleet" "$T/pki" "$N"
start_mosquitto "$T/pki"
write_conf "$T/espfleetd.conf" "$T/fleet" 'workers = 2;' \
        'ramp = { rate = 10.0; };' 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };'

# run_tty OUT [ENV...]: the daemon on a pseudo-terminal until the ramp is done
run_tty() {
        local out=$1; shift
        env TERM=xterm "$@" script -qfec "$ESPFLEETD -c $T/espfleetd.conf" /dev/null >"$out" 2>&1 &
        local spid=$!
        _PIDS+=("$spid")
        wait_count 60 "$out" "Initial ramp done: $N/$N" 1 || fail "the fleet did not come online ($out)"
        sleep 1.5
        pkill -TERM -f "^$ESPFLEETD -c $T/espfleetd.conf" || true
        timeout 30 tail --pid="$spid" -f /dev/null || fail "the daemon did not stop"
}

run_tty "$T/tty.out"
grep -qE $'\r\e\\[Konline [0-9]+/'"$N"' \([0-9.]+ %\)  ([0-9]+|--)/s  ETA ' "$T/tty.out" || fail "no status line on the terminal"
# every worker line starts a line of its own: after a newline or after the
# status line was cleared, never glued to the status text
tr '\r' '\n' <"$T/tty.out" | sed 's/\x1b\[K//g' >"$T/tty.lines"
grep -qE '^espfleetd\[worker [01]\]\[[0-9]+\]: info: Worker [01]: running' "$T/tty.lines" || fail "worker lines are not intact"
grep -qE 'ETA [0-9:-]+espfleetd' "$T/tty.lines" && fail "a log line was glued to the status line"
# once all are online the status line is gone: the last status is cleared
last=$(grep -aoE $'\r\e\\[K[^\r\n]*' "$T/tty.out" | tail -n 1 || true)
[[ $last == $'\r\e[K' || $last != *online* ]] || fail "the status line stayed after the ramp: '$last'"

# under systemd: no status line even on a terminal
run_tty "$T/journal.out" JOURNAL_STREAM=1:1
grep -qE 'Konline [0-9]+/' "$T/journal.out" && fail "a status line under systemd (JOURNAL_STREAM)"

# not a terminal (this script's own daemon log): no escape sequences at all
start_daemon "$T/espfleetd.conf"
wait_count 60 "$T/espfleetd.log" "Initial ramp done: $N/$N" 1 || fail "the fleet did not come online"
stop_daemon
grep -q $'\e\\[K' "$T/espfleetd.log" && fail "escape sequences in a log that is not a terminal"
echo "ok: a status line on a terminal only, worker lines intact"
