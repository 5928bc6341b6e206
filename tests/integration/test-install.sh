#!/usr/bin/env bash
# `meson install --destdir` (issues #13, #14 "Install and packaging"): the
# binaries, the sample config, the README that Documentation= names, the
# units generated from the configured sbindir/sysconfdir, the template unit
# and its target, and the sysusers.d/tmpfiles.d snippets land under the
# configured prefix; the installed binary starts with the installed config
# and the paths the units name. Once with the build's own options, once in
# a build of its own with --prefix=/usr --sysconfdir=/etc (Debian's layout).
source "$(dirname "$0")/lib.sh"
: "${BUILD_DIR:?BUILD_DIR must name the meson build directory}"
D=$T/destdir

meson install -C "$BUILD_DIR" --destdir "$D" --no-rebuild >"$T/install.log" 2>&1 \
        || { tail -n 30 "$T/install.log" >&2; fail "meson install --destdir"; }
opt() {
        meson introspect "$BUILD_DIR" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
v = o[sys.argv[1]]
print(v if v.startswith("/") else o["prefix"].rstrip("/") + "/" + v)' "$1"
}
prefix=$(opt prefix)
sbindir=$(opt sbindir)
bindir=$(opt bindir)
sysconfdir=$(opt sysconfdir)
datadir=$(opt datadir)
log "prefix $prefix: sbindir $sbindir, sysconfdir $sysconfdir"

log "installed files"
for f in "$sbindir/espfleetd" "$bindir/espfleet"; do
        [ -x "$D$f" ] || fail "$f is not installed"
done
cmp "$SOURCE_DIR/etc/espfleet.conf" "$D$sysconfdir/espfleet/espfleet.conf" || fail "the installed config is not etc/espfleet.conf"
[ -f "$D$datadir/doc/espfleet/README.md" ] || fail "README.md is not in $datadir/doc/espfleet"
find "$D" -name espfleetd.service >"$T/units"
[ "$(wc -l <"$T/units")" -eq 1 ] || { cat "$T/units" >&2; fail "not exactly one espfleetd.service installed"; }
unitdir=$(dirname "$(cat "$T/units")")
unitdir=${unitdir#"$D"}
case $unitdir in "$prefix"/*) ;; *) fail "units in $unitdir, outside the prefix $prefix" ;; esac
for u in espfleetd.service espfleetd@.service espfleet.target; do
        [ -f "$D$unitdir/$u" ] || fail "$u is not in $unitdir"
done
sysusers=$(find "$D" -path '*/sysusers.d/espfleet.conf')
tmpfiles=$(find "$D" -path '*/tmpfiles.d/espfleet.conf')
[ -n "$sysusers" ] && [ -n "$tmpfiles" ] || fail "no sysusers.d or tmpfiles.d snippet"
case ${sysusers#"$D"} in "$prefix"/lib/sysusers.d/*) ;; *) fail "sysusers.d snippet at ${sysusers#"$D"}" ;; esac
case ${tmpfiles#"$D"} in "$prefix"/lib/tmpfiles.d/*) ;; *) fail "tmpfiles.d snippet at ${tmpfiles#"$D"}" ;; esac
if grep -n '@[A-Z_]*@' "$D$unitdir"/espfleetd*.service; then fail "a unit has an unsubstituted @VAR@"; fi

log "the units name the installed paths"
unit_value() { sed -n "s/^$2=//p" "$1"; }
exec_start=$(unit_value "$D$unitdir/espfleetd.service" ExecStart)
read -r bin c conf rest <<<"$exec_start"
[ "$bin" = "$sbindir/espfleetd" ] || fail "ExecStart runs $bin, not $sbindir/espfleetd"
[ "$c" = -c ] && [ "$conf" = "$sysconfdir/espfleet/espfleet.conf" ] || fail "ExecStart reads '$c $conf'"
[ -z "$rest" ] || fail "ExecStart has more arguments: $rest"
for u in espfleetd.service espfleetd@.service; do
        doc=$(unit_value "$D$unitdir/$u" Documentation)
        [[ " $doc " == *" man:espfleetd(8) "* ]] || fail "$u: Documentation= does not name man:espfleetd(8)"
        file=$(tr ' ' '\n' <<<"$doc" | sed -n 's|^file://||p')
        [ -f "$D$file" ] || fail "$u: Documentation= names $file, which is not installed"
done
# check_installed OUT DAEMON ARGS…: --check-config parses the installed config
# and then opens the fleet it names, the installed default
# /var/lib/espfleet/fleet, which only provisioning makes: either is fine,
# anything else is not
check_installed() {
        local out=$1; shift
        if "$@" --check-config >"$out" 2>&1; then
                grep -q "OK" "$out" || fail "--check-config did not say OK: $(cat "$out")"
        else
                grep -q "/var/lib/espfleet/fleet: cannot open fleet directory" "$out" \
                        || { cat "$out" >&2; fail "the installed daemon refuses the installed config"; }
        fi
}
check_installed "$T/check.out" "$D$bin" -c "$D$conf"
"$D$bin" --help >"$T/help.out"
grep -qF "default $sysconfdir/espfleet/espfleet.conf)" "$T/help.out" || fail "without -c, espfleetd reads another config"

log "the template: instance I runs --shard I/\$ESPFLEET_SHARDS with \$ESPFLEET_CONFIG"
tmpl=$D$unitdir/espfleetd@.service
grep -qx 'PartOf=espfleet.target' "$tmpl" || fail "espfleetd@.service is not PartOf=espfleet.target"
grep -qx 'WantedBy=espfleet.target' "$tmpl" || fail "espfleetd@.service is not WantedBy=espfleet.target"
grep -qx 'WantedBy=multi-user.target' "$D$unitdir/espfleet.target" || fail "espfleet.target is not WantedBy=multi-user.target"
grep -qx "Environment=ESPFLEET_CONFIG=$sysconfdir/espfleet/espfleet.conf" "$tmpl" || fail "template: default config"
grep -qx 'Environment=ESPFLEET_SHARDS=1' "$tmpl" || fail "template: default shard count"
grep -qx 'RuntimeDirectory=espfleet/shard-%i' "$tmpl" || fail "template: one runtime directory (control socket) per shard"
# what systemd runs for espfleetd@1 with a drop-in setting ESPFLEET_SHARDS=2
cmd=$(unit_value "$tmpl" ExecStart | sed -e 's/%i/1/g' -e 's/${ESPFLEET_SHARDS}/2/g' \
        -e "s|\${ESPFLEET_CONFIG}|$sysconfdir/espfleet/espfleet.conf|g")
read -r bin c conf shard_opt shard <<<"$cmd"
[ "$bin $c $conf $shard_opt $shard" = "$sbindir/espfleetd -c $sysconfdir/espfleet/espfleet.conf --shard 1/2" ] \
        || fail "espfleetd@1 would run: $cmd"
check_installed "$T/check1.out" "$D$bin" -c "$D$conf" --shard "$shard"

command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/deps.sh installs systemd)"
if true; then
        log "systemd-analyze verify (the daemon exists only under the destdir: that complaint is expected)"
        mkdir -p "$T/units.d"
        cp "$D$unitdir"/espfleetd.service "$D$unitdir"/espfleetd@.service "$D$unitdir"/espfleet.target "$T/units.d/"
        cp "$T/units.d/espfleetd@.service" "$T/units.d/espfleetd@1.service"
        for u in espfleetd.service espfleetd@1.service espfleet.target; do
                SYSTEMD_UNIT_PATH="$T/units.d:" systemd-analyze verify --man=no "$T/units.d/$u" >"$T/verify.out" 2>&1 || true
                if grep -v -e "Command $sbindir/espfleetd is not executable" \
                        -e "sysinit.target not found" -e "Command /bin/kill is not executable" "$T/verify.out" |
                        grep -q .; then
                        cat "$T/verify.out" >&2
                        fail "systemd-analyze verify $u"
                fi
        done
        # the hardening score the README gives; a change that loosens it shows here
        for u in espfleetd.service espfleetd@1.service; do
                score=$(systemd-analyze security --offline=true "$T/units.d/$u" 2>/dev/null \
                        | sed -nE 's/.*Overall exposure level for [^:]+: ([0-9.]+).*/\1/p')
                [ -n "$score" ] || fail "systemd-analyze security gave no score for $u"
                awk -v s="$score" 'BEGIN { exit !(s <= 1.4) }' || fail "$u: exposure $score, the README says 1.4"
        done
fi

if [ "$(id -u)" -eq 0 ] && command -v systemd-sysusers >/dev/null; then
        log "sysusers.d and tmpfiles.d make the user and /var/lib/espfleet(/fleet) in the destdir"
        mkdir -p "$D/etc"
        systemd-sysusers --root="$D" "$sysusers" >"$T/sysusers.out" 2>&1 || { cat "$T/sysusers.out" >&2; fail "systemd-sysusers"; }
        grep -q '^espfleet:' "$D/etc/passwd" || fail "no espfleet user"
        systemd-tmpfiles --root="$D" --create "$tmpfiles" >"$T/tmpfiles.out" 2>&1 || { cat "$T/tmpfiles.out" >&2; fail "systemd-tmpfiles"; }
        uid=$(awk -F: '$1 == "espfleet" { print $3 }' "$D/etc/passwd")
        [ "$(stat -c '%u %a' "$D/var/lib/espfleet/fleet")" = "$uid 700" ] || fail "/var/lib/espfleet/fleet is not espfleet's, 0700"
fi

log "--prefix=/usr --sysconfdir=/etc (README \"Install as a service\"): the files where Debian expects them"
meson setup "$T/usr-build" "$SOURCE_DIR" --prefix=/usr --sysconfdir=/etc -Dtests=disabled -Dbuildtype=release \
        >"$T/usr-setup.log" 2>&1 || { tail -n 20 "$T/usr-setup.log" >&2; fail "meson setup --prefix=/usr"; }
ninja -C "$T/usr-build" -j1 >"$T/usr-build.log" 2>&1 || { tail -n 20 "$T/usr-build.log" >&2; fail "building with --prefix=/usr"; }
U=$T/usr-destdir
meson install -C "$T/usr-build" --destdir "$U" --no-rebuild >"$T/usr-install.log" 2>&1 || fail "meson install --prefix=/usr"
(cd "$U" && find . -type f | sed 's|^\.||' | sort) >"$T/usr-files"
cat >"$T/usr-want" <<'LIST'
/etc/espfleet/espfleet.conf
/usr/bin/espfleet
/usr/lib/systemd/system/espfleet.target
/usr/lib/systemd/system/espfleetd.service
/usr/lib/systemd/system/espfleetd@.service
/usr/lib/sysusers.d/espfleet.conf
/usr/lib/tmpfiles.d/espfleet.conf
/usr/sbin/espfleetd
/usr/share/doc/espfleet/README.md
/usr/share/man/man1/espfleet.1
/usr/share/man/man5/espfleet.conf.5
/usr/share/man/man8/espfleetd.8
LIST
diff "$T/usr-want" "$T/usr-files" >&2 || fail "--prefix=/usr installs other files than these"
grep -qx 'ExecStart=/usr/sbin/espfleetd -c /etc/espfleet/espfleet.conf' "$U/usr/lib/systemd/system/espfleetd.service" \
        || fail "--prefix=/usr: ExecStart is not /usr/sbin/espfleetd -c /etc/espfleet/espfleet.conf"
grep -qx 'Documentation=man:espfleetd(8) file:///usr/share/doc/espfleet/README.md' "$U/usr/lib/systemd/system/espfleetd.service" \
        || fail "--prefix=/usr: Documentation="
check_installed "$T/usr-check.out" "$U/usr/sbin/espfleetd" -c "$U/etc/espfleet/espfleet.conf"
"$U/usr/sbin/espfleetd" --help | grep -qF "default /etc/espfleet/espfleet.conf)" || fail "--prefix=/usr: default config"

log "the installed binaries run a fleet"
pki_init "$T/pki"
"$D$bindir/espfleet" provision "$T/fleet" --pki "$T/pki" --count 2 --key-pool 1 --jobs 1 >>"$T/provision.log" 2>&1 \
        || fail "the installed espfleet cannot provision"
start_mosquitto "$T/pki"
write_conf "$T/espfleetd.conf" "$T/fleet" 'ramp = { rate = 50.0; };' 'device = { boot_time_ms = 100; };' \
        'log = { summary_interval = 1; };'
ESPFLEETD=$D$sbindir/espfleetd start_daemon "$T/espfleetd.conf"
wait_count 30 "$T/espfleetd.log" "Fleet: online 2/2" 1 || fail "the installed espfleetd did not bring 2 devices online"
stop_daemon
echo "ok: meson install --destdir: files under $prefix and with --prefix=/usr, units name the configured paths, the installed daemon runs"
