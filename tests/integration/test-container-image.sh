#!/usr/bin/env bash
# docker/ (issue #13 "Container"). Always: the Dockerfile's entrypoint is
# where meson installs espfleetd with --prefix=/usr, the runtime user is not
# root, the fleet and config are volumes, the healthcheck is `espfleet
# status`, the build context leaves .git out, compose.yaml wires the three
# services. With buildah: the image builds (--isolation chroot, from a
# local Debian 12 image made with mmdebstrap when none is there), and its
# root filesystem, entered with chroot as the image's user and environment,
# runs a fleet against the real mosquitto and answers the healthcheck.
# `podman run` itself does not work on this machine kind (README
# "Container"): the test goes as far as the image's contents.
source "$(dirname "$0")/lib.sh"
DOCKER=$SOURCE_DIR/docker

log "Dockerfile, ignore files, compose.yaml"
df=$DOCKER/Dockerfile
last() { grep -E "^$1 " "$df" | tail -n 1 | cut -d' ' -f2-; }
[ "$(last ENTRYPOINT)" = '["/usr/sbin/espfleetd", "-c", "/etc/espfleet/espfleet.conf"]' ] \
        || fail "ENTRYPOINT is $(last ENTRYPOINT)"
grep -q -- "--prefix=/usr --sysconfdir=/etc" "$df" || fail "the build stage does not install with --prefix=/usr --sysconfdir=/etc"
[ "$(grep -c '^FROM ' "$df")" -ge 2 ] || fail "not a multi-stage build"
user=$(last USER)
[ -n "$user" ] && [[ $user != root* && $user != 0* ]] || fail "the runtime user is '${user:-root}'"
grep -q '^VOLUME .*"/var/lib/espfleet"' "$df" && grep -q '^VOLUME .*"/etc/espfleet"' "$df" || fail "fleet and config are not volumes"
grep -q '^HEALTHCHECK .*CMD \["espfleet", "status"\]' "$df" || fail "the healthcheck is not espfleet status"
for f in "$DOCKER/Dockerfile.dockerignore" "$SOURCE_DIR/.dockerignore"; do
        grep -qx '.git' "$f" || fail "$f does not leave .git out"
        grep -qx 'build\*/' "$f" || fail "$f does not leave the build dirs out"
done
cmp "$DOCKER/Dockerfile.dockerignore" "$SOURCE_DIR/.dockerignore" || fail "the two ignore files differ (docker reads one, podman the other)"
python3 - "$DOCKER" <<'PY' || fail "compose.yaml"
import os, re, sys, yaml
d = sys.argv[1]
c = yaml.safe_load(open(os.path.join(d, "compose.yaml")))
s = c["services"]
for name in ("setup", "mosquitto", "ota", "espfleetd"):
    assert name in s, f"no service {name}"
for name in ("mosquitto", "ota", "espfleetd"):
    dep = s[name]["depends_on"]["setup"]["condition"]
    assert dep == "service_completed_successfully", f"{name} does not wait for setup"
    for v in s[name]["volumes"]:
        src = v.split(":")[0]
        if src.startswith("./"):
            assert os.path.exists(os.path.join(d, src)), f"{name} mounts {src}, which is not in docker/"
conf = open(os.path.join(d, "espfleet.conf")).read()
assert re.search(r'host = "mosquitto"', conf), "espfleet.conf does not name the broker's service"
assert "https://ota:8070/" in conf, "espfleet.conf's OTA URL is not the ota service"
setup = s["setup"]["command"][0]
assert "--host mosquitto --host ota" in setup, "the PKI's server certificates do not name the services"
assert "8070 ssl" in open(os.path.join(d, "nginx.conf")).read()
assert "require_certificate true" in open(os.path.join(d, "mosquitto.conf")).read()
PY

command -v buildah >/dev/null || { echo "SKIP: buildah is not installed: the image was not built" >&2; exit 77; }
BASE=${ESPFLEET_CONTAINER_BASE:-localhost/debian:12-local}
if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
        command -v mmdebstrap >/dev/null || { echo "SKIP: no image $BASE and no mmdebstrap to make one" >&2; exit 77; }
        log "making $BASE with mmdebstrap (no registry needed)"
        mmdebstrap --variant=apt --include=ca-certificates bookworm "$T/base.tar" \
                "deb http://deb.debian.org/debian bookworm main" \
                "deb http://deb.debian.org/debian-security bookworm-security main" >"$T/mmdebstrap.log" 2>&1 \
                || { tail "$T/mmdebstrap.log" >&2; fail "mmdebstrap"; }
        # buildah has no "import": a FROM scratch build whose ADD unpacks the tar
        mkdir "$T/base"
        mv "$T/base.tar" "$T/base/"
        printf 'FROM scratch\nADD base.tar /\n' >"$T/base/Containerfile"
        buildah bud --isolation chroot --format docker -f "$T/base/Containerfile" -t "$BASE" "$T/base" \
                >"$T/base-import.log" 2>&1 || { tail "$T/base-import.log" >&2; fail "importing the base image"; }
        rm -rf "$T/base"
fi

IMAGE=localhost/espfleet-test:$$
log "buildah bud --isolation chroot --format docker (from $BASE)"
_ctr=
_mounts=()
_remove_image() {
        local m p
        # what runs inside the image's root must end before its mounts go
        for p in "${_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for p in "${_PIDS[@]}"; do
                timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
        done
        for m in "${_mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
        [ -z "$_ctr" ] || buildah rm "$_ctr" >/dev/null 2>&1 || true
        buildah rmi "$IMAGE" >/dev/null 2>&1 || true
}
trap 'rc=$?; _remove_image; (exit $rc); _cleanup' EXIT
buildah bud --isolation chroot --network host --format docker --build-arg BASE="$BASE" --build-arg NINJA_JOBS=1 \
        -f "$df" -t "$IMAGE" "$SOURCE_DIR" >"$T/build.log" 2>&1 || { tail -n 30 "$T/build.log" >&2; fail "the image does not build"; }
buildah inspect --type image "$IMAGE" >"$T/inspect.json"
python3 - "$T/inspect.json" >"$T/image.env" <<'PY' || fail "the image's config"
import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
assert c["Entrypoint"] == ["/usr/sbin/espfleetd", "-c", "/etc/espfleet/espfleet.conf"], c["Entrypoint"]
assert c["User"] == "espfleet:espfleet", c["User"]
assert set(c["Volumes"]) == {"/var/lib/espfleet", "/etc/espfleet"}, c["Volumes"]
hc = c.get("Healthcheck") or {}
assert hc.get("Test") == ["CMD", "espfleet", "status"], hc
for e in c["Env"]:
    print(e)
PY
# the build context left .git and the build dirs out
if grep -E 'COPY|ADD' "$T/build.log" | grep -q '\.git\b'; then fail "the build copied .git"; fi

_ctr=$(buildah from "$IMAGE")
ROOT=$(buildah mount "$_ctr")
[ -x "$ROOT/usr/sbin/espfleetd" ] && [ -x "$ROOT/usr/bin/espfleet" ] || fail "the image lacks the binaries"
[ ! -e "$ROOT/src" ] && [ ! -e "$ROOT/build" ] || fail "the runtime image holds the build stage's files"
uid=$(awk -F: '$1 == "espfleet" { print $3 }' "$ROOT/etc/passwd")
[ -n "$uid" ] && [ "$uid" -ne 0 ] || fail "no espfleet user in the image"
[ "$(stat -c %u "$ROOT/var/lib/espfleet/fleet")" = "$uid" ] || fail "the fleet dir is not espfleet's"
[ "$(stat -c %u "$ROOT/run/espfleet")" = "$uid" ] || fail "the runtime dir is not espfleet's"
# What a container runtime gives every container: /proc (espfleetd starts
# its workers from /proc/self/exe) and /dev.
mount -t proc proc "$ROOT/proc" && _mounts=("$ROOT/proc") || fail "cannot mount /proc in the image's root"
mount --bind /dev "$ROOT/dev" && _mounts=("$ROOT/dev" "${_mounts[@]}") || fail "cannot bind /dev into the image's root"
# in_image CMD...: as the image's user, with its environment, in its root filesystem
mapfile -t image_env <"$T/image.env"
in_image() { chroot --userspec="$uid:$uid" "$ROOT" env -i "${image_env[@]}" "$@"; }
for l in usr/sbin/espfleetd usr/bin/espfleet; do
        if chroot "$ROOT" ldd "/$l" | grep -q "not found"; then fail "/$l misses a library in the image"; fi
done
log "the image's root filesystem runs a fleet against mosquitto and answers the healthcheck"
pki_init "$T/pki"
provision "$T/fleet" "$T/pki" 3 --key-pool 1 --jobs 1
start_mosquitto "$T/pki"
cp -a "$T/fleet/." "$ROOT/var/lib/espfleet/fleet/"
chown -R "$uid:$uid" "$ROOT/var/lib/espfleet/fleet"
# the image's own config, once its fleet volume holds a fleet (--check-config opens it)
in_image /usr/sbin/espfleetd -c /etc/espfleet/espfleet.conf --check-config >"$T/check.out" 2>&1 \
        || { cat "$T/check.out" >&2; fail "the image's daemon refuses its config"; }
grep -q "OK (3 devices of /var/lib/espfleet/fleet)" "$T/check.out" || fail "$(cat "$T/check.out")"
cat >"$ROOT/etc/espfleet/test.conf" <<CONF
fleet_dir = "/var/lib/espfleet/fleet";
broker = { host = "127.0.0.1"; port = $MQTT_PORT; };
ramp = { rate = 50.0; };
device = { boot_time_ms = 100; };
log = { summary_interval = 1; };
CONF
if in_image espfleet status >"$T/health0.out" 2>&1; then fail "the healthcheck passed without a daemon"; fi
# not through in_image: a function in the background is a subshell, and
# DAEMON_PID would be that subshell, not the daemon (which then outlived the
# test); chroot and env exec, so $! is espfleetd itself
chroot --userspec="$uid:$uid" "$ROOT" env -i "${image_env[@]}" /usr/sbin/espfleetd -c /etc/espfleet/test.conf \
        >>"$T/espfleetd.log" 2>&1 &
DAEMON_PID=$!
_PIDS+=("$DAEMON_PID")
wait_count 30 "$T/espfleetd.log" "Fleet: online 3/3" 1 || fail "the image's daemon did not bring 3 devices online"
in_image espfleet status >"$T/health.out" 2>&1 || { cat "$T/health.out" >&2; fail "the healthcheck fails with the daemon running"; }
grep -q "3" "$T/health.out" || fail "espfleet status does not show the fleet"
stop_daemon
if pgrep -f -- "-c /etc/espfleet/test.conf" >/dev/null; then fail "the image's daemon outlived stop_daemon"; fi
echo "ok: the image builds; its entrypoint, user, volumes and healthcheck are right, and its files run a fleet"
