#!/usr/bin/env bash
# A fleet from before the sector store (issue #10): each device's flash.bin
# holds its app slots itself and there is no flash.bin.map. Once FLEET/store
# exists, the daemon moves the slots into it at start. The devices boot from
# the store, `espfleet store stat` finds every sector, and `espfleet flash
# export` writes the same bytes as before the move.
source "$(dirname "$0")/ota-lib.sh"

n=3
ota_fleet "$n"
# turn the fleet into an old one: dense flash images, no maps, no store
for id in "${OTA_IDS[@]}"; do
        d=$T/fleet/devices/$id
        "$ESPFLEET" flash export "$d" "$T/$id.dense" >>"$T/export.log" 2>&1 || fail "$id: flash export"
        cp "$T/$id.dense" "$d/flash.bin"
        rm -f "$d/flash.bin.map"
done
rm -rf "$T/fleet/store"
for id in "${OTA_IDS[@]}"; do
        "$ESPFLEET" flash info "$T/fleet/devices/$id" | grep -q "fleet's sector store" && fail "$id: still in a store"
done

mkdir "$T/fleet/store"
ota_daemon "https://localhost:1/fw.bin"
for id in "${OTA_IDS[@]}"; do
        wait_count 30 "$T/log.out" "^/esp/$id/log I \([0-9]+\) boot: App version: 1.0.0 " 1 || fail "$id: did not boot"
done
stop_daemon

"$ESPFLEET" store stat "$T/fleet" --verify >"$T/stat.txt" 2>&1 || { cat "$T/stat.txt" >&2; fail "store stat"; }
grep -qE '^sectors stored: +[1-9]' "$T/stat.txt" || { cat "$T/stat.txt" >&2; fail "nothing in the store"; }
grep -qE 'MISSING|CORRUPT' "$T/stat.txt" && { cat "$T/stat.txt" >&2; fail "the store is damaged"; }
for id in "${OTA_IDS[@]}"; do
        d=$T/fleet/devices/$id
        [ -f "$d/flash.bin.map" ] || fail "$id: no flash.bin.map after the daemon ran"
        "$ESPFLEET" flash info "$d" | grep -qE '^  ota_0 +[1-9][0-9]* bytes' || fail "$id: ota_0 not in the store"
        "$ESPFLEET" flash export "$d" "$T/$id.after" >>"$T/export.log" 2>&1 || fail "$id: flash export after"
        cmp -s "$T/$id.dense" "$T/$id.after" || fail "$id: the exported flash changed"
done
# the firmware is stored once for the fleet: n map entries per stored sector
stored=$(awk '/^sectors stored:/ {print $3}' "$T/stat.txt")
entries=$(awk '/^map entries:/ {print $3}' "$T/stat.txt")
[ "$entries" -eq $((n * stored)) ] || { cat "$T/stat.txt" >&2; fail "$entries map entries for $stored sectors and $n devices"; }
"$ESPFLEET" store gc "$T/fleet" >"$T/gc.txt" 2>&1 || { cat "$T/gc.txt" >&2; fail "store gc"; }
echo "ok: $n devices moved into the store, booted, and export the same bytes"
cat "$T/stat.txt"
