# shellcheck shell=bash
# The Debian 12 packages espfleet needs to build, test and run its demo.
# Sourced by scripts/demo.sh and scripts/test.sh; installs only what is missing.
ESPFLEET_DEB_PACKAGES=(
        build-essential meson ninja-build pkg-config
        libssl-dev openssl
        libmosquitto-dev mosquitto mosquitto-clients
        libsystemd-dev
        libcurl4-openssl-dev curl
        libconfig-dev
        libjson-c-dev libmicrohttpd-dev
        libcriterion-dev
        clang libfuzzer-14-dev llvm-14
        nginx
        prometheus chromium fonts-dejavu-core
        scdoc groff-base
        systemd buildah mmdebstrap
        python3 procps ca-certificates gdb xxd
        nodejs
)

ensure_deps() {
        local missing=() p
        for p in "${ESPFLEET_DEB_PACKAGES[@]}"; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        # Debian's nodejs comes without npm (the npm package); NodeSource's
        # has it built in and conflicts with Debian's npm.
        command -v npm >/dev/null || missing+=(npm)
        [ ${#missing[@]} -eq 0 ] && return 0
        echo "espfleet: installing missing Debian packages: ${missing[*]}" >&2
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -q
        # nginx's postinst starts a system nginx on :80; the tests run their own.
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ensure_build DIR [MESON ARGS...]: configure (once) and build.
ensure_build() {
        local dir=$1; shift
        if [ ! -f "$dir/build.ninja" ]; then
                meson setup "$dir" "$@"
        fi
        ninja -C "$dir"
}
