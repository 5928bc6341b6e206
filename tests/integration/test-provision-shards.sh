#!/usr/bin/env bash
# Shards (issue #13): `espfleet provision --shard I/N --count TOTAL --seed S`
# makes the same devices for the same arguments, wherever and however often
# it runs; no two shards share a device; `espfleetd --shard I/N` (or the
# shard key) runs only its slice, against the real mosquitto.
source "$(dirname "$0")/lib.sh"
TOTAL=9
SEED="shard-test-$$"

ids() { tail -n +2 "$1/manifest.csv" | cut -d, -f2; }
devdirs() { (cd "$1/devices" && ls); }

pki_init "$T/pki"
log "provision shards 0/2 and 1/2 of $TOTAL twice, into fresh directories (a re-created pod)"
for run in a b; do
        for i in 0 1; do
                provision "$T/$run$i" "$T/pki" $TOTAL --shard $i/2 --seed "$SEED" --key-pool 2 --jobs 1
        done
done
for i in 0 1; do
        cmp "$T/a$i/manifest.csv" "$T/b$i/manifest.csv" || fail "shard $i/2: a second run made other devices"
        [ "$(devdirs "$T/a$i")" = "$(devdirs "$T/b$i")" ] || fail "shard $i/2: other device directories"
        grep -qx "fleet_size = $TOTAL;" "$T/a$i/fleet.conf" || fail "shard $i/2: fleet.conf lacks fleet_size"
        # the secrets stay random: same device, another HMAC key (eFuse BLOCK_KEY1 at 144..175)
        id=$(ids "$T/a$i" | head -n 1)
        [ "$(od -An -tx1 -j144 -N32 "$T/a$i/devices/$id/efuse.bin")" != \
          "$(od -An -tx1 -j144 -N32 "$T/b$i/devices/$id/efuse.bin")" ] || fail "$id: the HMAC key was derived too"
done
# 9 * 0/2 .. 9 * 1/2: indexes 0..3, then 4..8
[ "$(tail -n +2 "$T/a0/manifest.csv" | cut -d, -f1 | xargs)" = "0 1 2 3" ] || fail "shard 0/2 holds other indexes"
[ "$(tail -n +2 "$T/a1/manifest.csv" | cut -d, -f1 | xargs)" = "4 5 6 7 8" ] || fail "shard 1/2 holds other indexes"
[ -z "$(comm -12 <(ids "$T/a0" | sort) <(ids "$T/a1" | sort))" ] || fail "the two shards share a device"
[ "$(cat <(ids "$T/a0") <(ids "$T/a1") | sort -u | wc -l)" -eq $TOTAL ] || fail "the shards do not hold $TOTAL ids"

log "the same seed without shards, and both shards into one directory, make the same fleet"
provision "$T/whole" "$T/pki" $TOTAL --seed "$SEED" --key-pool 2 --jobs 1
provision "$T/host" "$T/pki" $TOTAL --shard 1/2 --seed "$SEED" --key-pool 2 --jobs 1
provision "$T/host" "$T/pki" $TOTAL --shard 0/2 --seed "$SEED" --key-pool 2 --jobs 1
diff <(tail -n +2 "$T/a0/manifest.csv"; tail -n +2 "$T/a1/manifest.csv") <(tail -n +2 "$T/whole/manifest.csv") \
        || fail "the shards differ from the whole fleet of the same seed"
cmp "$T/whole/manifest.csv" "$T/host/manifest.csv" || fail "two shards in one directory differ from the whole fleet"
provision "$T/host" "$T/pki" $TOTAL --shard 1/2 --seed "$SEED"
grep -q "0 new devices" "$T/provision.log" || fail "re-running a finished shard made devices"

log "refusals: no seed, another seed, another fleet size, a shard beyond N, --first-index"
refused() {
        local what=$1 want=$2; shift 2
        if "$ESPFLEET" provision "$@" --pki "$T/pki" >"$T/refused.out" 2>&1; then
                fail "$what was accepted"
        fi
        grep -q -- "$want" "$T/refused.out" || { cat "$T/refused.out" >&2; fail "$what: no '$want' in the refusal"; }
}
refused "--shard without --seed" "needs --seed" "$T/x" --count $TOTAL --shard 0/2
refused "another seed" "another seed" "$T/a0" --count $TOTAL --shard 0/2 --seed "other-$SEED"
refused "another fleet size" "fleet of $TOTAL devices" "$T/a0" --count 10 --shard 0/2 --seed "$SEED"
refused "shard 2/2" "not I/N" "$T/x" --count $TOTAL --shard 2/2 --seed "$SEED"
refused "--shard with --first-index" "exclude each other" "$T/x" --count $TOTAL --shard 0/2 --seed "$SEED" \
        --first-index 3
refused "an empty shard" "holds no device" "$T/x" --count 2 --shard 0/4 --seed "$SEED"
[ ! -e "$T/x/manifest.csv" ] || [ "$(ids "$T/x" | wc -l)" -eq 0 ] || fail "a refused run made devices"

log "espfleetd --shard 1/2 and shard = \"0/2\" on the one directory holding both: each runs its slice"
start_mosquitto "$T/pki"
mqtt_sub_bg "$T/pki" "$T/status.out" '/esp/+/status'
common=('ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };' 'log = { summary_interval = 1; };')
write_conf "$T/one.conf" "$T/host" "${common[@]}"
"$ESPFLEETD" -c "$T/one.conf" --shard 1/2 >>"$T/one.log" 2>&1 &
ONE=$!
_PIDS+=("$ONE")
wait_count 60 "$T/status.out" '"state":"online"' 5 || fail "shard 1/2's 5 devices did not come online"
wait_count 30 "$T/one.log" "Fleet: online 5/5" 1 || fail "shard 1/2 did not report 5/5 online"
grep -q "Shard 1/2 of a fleet of $TOTAL devices: indexes 4..8, 5 of them" "$T/one.log" || fail "shard 1/2: no slice line"
sleep 1
for id in $(ids "$T/a0"); do
        if grep -q "u'$id'" "$T/mosquitto.log"; then fail "$id of shard 0/2 connected under shard 1/2"; fi
done
for id in $(ids "$T/a1"); do
        grep -q "^/esp/$id/status .*\"state\":\"online\"" "$T/status.out" || fail "$id of shard 1/2 is not online"
done
# SIGHUP re-reads the file, which has no shard key: --shard still stands
kill -HUP "$ONE"
wait_count 10 "$T/one.log" "Config reloaded" 1 || fail "shard 1/2: no reload after SIGHUP"
if grep -q "'shard' changed" "$T/one.log"; then fail "a reload lost --shard"; fi
write_conf "$T/zero.conf" "$T/host" "${common[@]}" 'shard = "0/2";'
start_daemon "$T/zero.conf" zero
wait_count 60 "$T/status.out" '"state":"online"' $TOTAL || fail "with both shards running, not all $TOTAL online"
wait_count 30 "$T/zero.log" "Fleet: online 4/4" 1 || fail "shard 0/2 did not report 4/4 online"
distinct=$(grep '"state":"online"' "$T/status.out" | cut -d' ' -f1 | sort -u | wc -l)
[ "$distinct" -eq $TOTAL ] || fail "expected $TOTAL distinct online devices, got $distinct"
! grep -q "already\|busy" "$T/zero.log" "$T/one.log" || fail "the two shards' daemons met on a device lock"
stop_daemon
stop_daemon "$ONE"

log "a pod's own directory: its shard runs from the recorded fleet_size, another shard is refused"
write_conf "$T/pod.conf" "$T/a1" "${common[@]}"
"$ESPFLEETD" -c "$T/pod.conf" --shard 1/2 --check-config >"$T/check.out" 2>&1 || fail "--check-config with --shard"
write_conf "$T/podrun.conf" "$T/a1" "${common[@]}" 'shard = "1/2";'
start_daemon "$T/podrun.conf" pod
wait_count 30 "$T/pod.log" "Fleet: online 5/5" 1 || fail "shard 1/2 on its own directory did not come online"
grep -q "Shard 1/2 of a fleet of $TOTAL devices: indexes 4..8, 5 of them" "$T/pod.log" || fail "pod: no slice line"
stop_daemon
if "$ESPFLEETD" -c "$T/pod.conf" --shard 0/2 >"$T/pod0.log" 2>&1; then fail "shard 0/2 ran on shard 1/2's directory"; fi
grep -q "shard 0/2 of a fleet of $TOTAL devices (indexes 0..3) has no device" "$T/pod0.log" \
        || { cat "$T/pod0.log" >&2; fail "no reason for refusing shard 0/2"; }
write_conf "$T/both.conf" "$T/a1" "${common[@]}" 'first_device = 4;'
if "$ESPFLEETD" -c "$T/both.conf" --shard 1/2 >"$T/both.log" 2>&1; then fail "shard with first_device ran"; fi
grep -q "first_device and device_count must stay 0" "$T/both.log" || { cat "$T/both.log" >&2; fail "no reason"; }
if "$ESPFLEETD" -c "$T/pod.conf" --shard 3/2 >"$T/bad.log" 2>&1; then fail "--shard 3/2 was accepted"; fi
echo "ok: two shards of $TOTAL provisioned twice with the same ids and no overlap; each daemon ran only its slice"
