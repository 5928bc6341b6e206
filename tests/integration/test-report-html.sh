#!/bin/bash
# espfleet report html: the sample run report rendered to one self-contained
# page, clear errors for a missing or broken report, and a screenshot by
# headless chromium that shows the page really draws (size, and the red
# FAILED banner the sample's verdict calls for).
set -euo pipefail
: "${ESPFLEET:?ESPFLEET must point at the espfleet binary}"
: "${SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
T=$(mktemp -d "${TMPDIR:-/tmp}/espfleet-html.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] && echo "# kept $T" >&2 || rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

SAMPLE=$SOURCE_DIR/tests/data/report-sample.json
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || fail "chromium is not installed (Debian: apt-get install chromium); this test screenshots the page with it"
command -v python3 >/dev/null || fail "python3 is not installed; this test reads the screenshot with it"

# expect_fail NEEDLE CMD...: CMD must fail and say NEEDLE.
expect_fail() {
        local needle=$1; shift
        if "$@" >"$T/out" 2>&1; then fail "succeeded: $*"; fi
        grep -qF -- "$needle" "$T/out" || { cat "$T/out" >&2; fail "'$*' did not say '$needle'"; }
}

log "render the sample report"
"$ESPFLEET" report html "$SAMPLE" -o "$T/report.html"
"$ESPFLEET" report html "$SAMPLE" >"$T/stdout.html"
cmp -s "$T/report.html" "$T/stdout.html" || fail "-o FILE and standard output differ"
[ "$(head -n1 "$T/report.html")" = "<!DOCTYPE html>" ] || fail "the page does not start with <!DOCTYPE html>"
[ "$(grep -c '<svg' "$T/report.html")" = "$(grep -c '</svg>' "$T/report.html")" ] || fail "an <svg> is not closed"
[ "$(grep -o '<svg' "$T/report.html" | wc -l)" = 4 ] || fail "the page does not have its 4 charts"
if grep -qi '<script' "$T/report.html"; then fail "the page has a script"; fi
grep -qF 'FAILED' "$T/report.html" || fail "no verdict banner"
python3 - "$SAMPLE" "$T/report.html" <<'PY' || fail "a device of the sample is not on the page"
import json, sys
report = json.load(open(sys.argv[1]))
page = open(sys.argv[2], encoding="utf-8").read()
missing = [d["id"] for d in report["devices"] if d["id"] not in page]
if missing:
    sys.exit("missing: " + ", ".join(missing))
PY

log "errors"
expect_fail "missing.json: cannot read: No such file or directory" "$ESPFLEET" report html "$T/missing.json"
printf '{"report_version": 1, "devices": [' >"$T/truncated.json"
expect_fail "truncated.json: not valid JSON: unexpected end of data" \
        "$ESPFLEET" report html "$T/truncated.json" -o "$T/truncated.html"
[ ! -e "$T/truncated.html" ] || fail "a failed render left $T/truncated.html behind"
printf '{"a": }' >"$T/bad.json"
expect_fail "bad.json: not valid JSON: unexpected character" "$ESPFLEET" report html "$T/bad.json"
printf '[]' >"$T/array.json"
expect_fail "not a run report" "$ESPFLEET" report html "$T/array.json"
expect_fail "exactly one REPORT.json" "$ESPFLEET" report html
expect_fail "Unknown 'report' command" "$ESPFLEET" report pdf "$SAMPLE"

log "screenshot with $CHROMIUM"
# chromium logs harmless errors (no D-Bus, no GPU); only its status counts.
# A profile of its own, so that a chromium already running elsewhere does
# not take the call over.
if ! timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --user-data-dir="$T/profile" \
        --screenshot="$T/shot.png" --window-size=1280,2400 "file://$T/report.html" >"$T/chromium.log" 2>&1; then
        tail -n 20 "$T/chromium.log" >&2
        fail "chromium could not screenshot the page"
fi
[ -s "$T/shot.png" ] || { tail -n 20 "$T/chromium.log" >&2; fail "chromium wrote no screenshot"; }

python3 - "$T/shot.png" <<'PY' || fail "the screenshot is not what the page should look like"
import struct, sys, zlib

data = open(sys.argv[1], "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("not a PNG file")
length, kind = struct.unpack(">I4s", data[8:16])
if kind != b"IHDR":
    sys.exit("no IHDR chunk")
width, height, depth, color = struct.unpack(">IIBB", data[16:26])
print(f"# screenshot {width}x{height}, {len(data)} bytes", file=sys.stderr)
if (width, height) != (1280, 2400):
    sys.exit(f"{width}x{height}, not 1280x2400")
if len(data) <= 30 * 1024:
    sys.exit(f"{len(data)} bytes: no bigger than a blank page")
if depth != 8 or color not in (2, 6):
    sys.exit(f"bit depth {depth}, color type {color}: not 8-bit RGB(A), cannot look inside")

# Undo the PNG row filters (RFC 2083 §6) for the top of the page, where the
# verdict banner is, and count its red (#c0392b) pixels.
idat, pos = b"", 8
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + length]
    pos += 12 + length
raw = zlib.decompressobj().decompress(idat, 0)
bpp = 3 if color == 2 else 4
stride = width * bpp
prev = bytearray(stride)
red = 0
for y in range(700):
    row = raw[y * (stride + 1):(y + 1) * (stride + 1)]
    kind, cur = row[0], bytearray(row[1:])
    for i in range(stride):
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            cur[i] = (cur[i] + a) & 0xff
        elif kind == 2:
            cur[i] = (cur[i] + b) & 0xff
        elif kind == 3:
            cur[i] = (cur[i] + (a + b) // 2) & 0xff
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xff
    for x in range(0, stride, bpp):
        if abs(cur[x] - 0xc0) <= 8 and abs(cur[x + 1] - 0x39) <= 8 and abs(cur[x + 2] - 0x2b) <= 8:
            red += 1
    prev = cur
print(f"# {red} pixels of the FAILED banner's red in the top 700 rows", file=sys.stderr)
if red < 20000:
    sys.exit("no red FAILED banner at the top of the page")
PY
log "ok"
