#!/usr/bin/env bash
# The man pages espfleet(1), espfleetd(8) and espfleet.conf(5) are built
# (scdoc) from the programs' own --help texts and config table: every verb
# and every option of every verb is in espfleet(1), every config key with its
# default in espfleet.conf(5), every option of espfleetd in espfleetd(8), and
# groff renders each page without a warning.
source "$(dirname "$0")/lib.sh"
B=$(cd "$(dirname "$ESPFLEETD")/../.." && pwd)
for p in espfleet.1 espfleetd.8 espfleet.conf.5; do
        [ -s "$B/man/$p" ] || fail "$B/man/$p was not built (scdoc is in scripts/deps.sh)"
        # -k: preconv, as man(1) runs it; -ww: every warning; -z: only the diagnostics
        groff -k -man -ww -z -Tutf8 "$B/man/$p" 2>"$T/$p.warn" || fail "groff failed on $p"
        [ ! -s "$T/$p.warn" ] || fail "groff warns about $p: $(head -n 3 "$T/$p.warn")"
        MANWIDTH=200 groff -k -man -Tutf8 -P-cbou "$B/man/$p" >"$T/$p.txt" 2>/dev/null || fail "cannot render $p"
done

# espfleet(1): each verb's section, and every long option its --help names
verbs=$("$ESPFLEET" --help | sed -nE 's/^  ([a-z][a-z-]+)  .*/\1/p')
[ "$(echo "$verbs" | wc -w)" -ge 10 ] || fail "too few verbs in espfleet --help: $verbs"
for v in $verbs; do
        grep -qE "^ +espfleet $v\$" "$T/espfleet.1.txt" || fail "espfleet(1) has no section for '$v'"
        for o in $("$ESPFLEET" "$v" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
                grep -qF -- "$o" "$T/espfleet.1.txt" || fail "espfleet(1) lacks '$v $o'"
        done
done

# espfleetd(8): every option of its --help
for o in $("$ESPFLEETD" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
        grep -qF -- "$o" "$T/espfleetd.8.txt" || fail "espfleetd(8) lacks '$o'"
done

# espfleet.conf(5): every key of the config table, with its default
"$ESPFLEETD" --dump-config | python3 -c '
import re, sys
page = open(sys.argv[1]).read()
groups, n = [], 0
for line in sys.stdin:
    line = line.strip()
    m = re.match(r"^([a-z_]+) = \{$", line)
    if m:
        groups.append(m.group(1)); continue
    if line == "};":
        groups.pop(); continue
    m = re.match(r"^#([a-z_]+) = (.*);$", line)
    if m:
        key = ".".join(groups + [m.group(1)])
        want = "%s = %s" % (key, m.group(2))
        assert want in page, "espfleet.conf(5) lacks %r" % want
        n += 1
assert n >= 40, n
print("%d keys documented" % n)
' "$T/espfleet.conf.5.txt" || fail "espfleet.conf(5) does not document every key"
echo "ok: the man pages cover every verb, option and config key"
