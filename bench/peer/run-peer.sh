#!/usr/bin/env bash
# Runs the issue #16 peer (peer.js: N MQTT.js mTLS clients in one Node
# process) against a broker, after preparing what it needs:
#   - N client certificates from the espfleet PKI (bench-certs), cached in
#     CERTS and reused while it holds >= N certs from the same CA;
#   - node_modules (npm ci from the committed package-lock.json) when missing;
#   - ulimit -n raised to the hard limit (Node cannot raise its own).
#
#   bench/peer/run-peer.sh --pki PKI --n N [--rate R] [--hold S] [--host H] [--port P]
#                          [--certs DIR] [--keys K] [-- MORE peer.js ARGS]
#
#   --pki PKI     made by `espfleet pki init` (its CA signs the certs; ca.crt verifies the broker)
#   --n N         clients
#   --rate R      connects offered per second (default 200; 0 = unthrottled)
#   --hold S      seconds online before RSS is read (default 10)
#   --host/--port broker (default 127.0.0.1:8883); the broker cert is checked for
#                 "localhost" (pass -- --servername NAME for another)
#   --certs DIR   cert cache (default: PKI's parent dir/peer-certs; never a fleet dir)
#   --keys K      RSA-2048 key pool size for bench-certs (default 16)
# Environment: BUILD (meson build dir with bench/bench-certs, default build;
# built when missing), BENCH_CERTS (path of a bench-certs binary instead).
#
# Output: peer.js's progress on stderr and its one result line on stdout,
#   "peer: n=… online=… secs=… rate=… cpu_ms_per_client=… rss_kib_per_client=… failures=… …"
# (fields documented in peer.js); exit status is peer.js's (0 = all N online).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

die() { echo "run-peer: $*" >&2; exit 2; }

pki='' n='' rate=200 hold=10 host=127.0.0.1 port=8883 certs='' keys=16
while [ $# -gt 0 ]; do
        case $1 in
        --pki) pki=${2:?}; shift 2 ;;
        --n) n=${2:?}; shift 2 ;;
        --rate) rate=${2:?}; shift 2 ;;
        --hold) hold=${2:?}; shift 2 ;;
        --host) host=${2:?}; shift 2 ;;
        --port) port=${2:?}; shift 2 ;;
        --certs) certs=${2:?}; shift 2 ;;
        --keys) keys=${2:?}; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (peer.js options go after --)" ;;
        esac
done
if [ -z "$pki" ] || [ ! -f "$pki/ca.crt" ]; then
        die "--pki PKI (a dir made by espfleet pki init) is required"
fi
[[ $n =~ ^[1-9][0-9]*$ ]] || die "--n N (a positive integer) is required"
certs=${certs:-$(cd "$pki/.." && pwd)/peer-certs}

command -v node >/dev/null || die "node is not installed (the peer is MQTT.js on Node)"

# 1. certificates, reused when the cache has enough from this PKI's CA
cache_count() {
        local c=''
        if [ -f "$certs/certs.conf" ] && cmp -s "$certs/ca.crt" "$pki/ca.crt"; then
                c=$(sed -n 's/^count=\([0-9][0-9]*\)$/\1/p' "$certs/certs.conf")
        fi
        echo "${c:-0}"
}
if [ "$(cache_count)" -lt "$n" ]; then
        bc=${BENCH_CERTS:-}
        if [ -z "$bc" ]; then
                build=${BUILD:-build}
                case $build in /*) ;; *) build=$top/$build ;; esac
                bc=$build/bench/bench-certs
                if [ ! -x "$bc" ]; then
                        [ -f "$build/build.ninja" ] || meson setup "$build" "$top" >/dev/null
                        ninja -C "$build" bench/bench-certs >/dev/null
                fi
        fi
        echo "run-peer: issuing $n client certificates into $certs" >&2
        "$bc" --pki "$pki" --count "$n" --keys "$keys" --out "$certs" >&2
fi

# 2. MQTT.js, exactly as locked
if [ ! -f "$here/node_modules/mqtt/package.json" ]; then
        echo "run-peer: npm ci in $here" >&2
        (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# 3. one fd per client, plus a few
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$((n + 64))" -gt "$hard" ]; then
        die "$n clients need ~$((n + 64)) fds, the hard limit (ulimit -Hn) is $hard"
fi
ulimit -n "$hard"

exec node "$here/peer.js" --certs "$certs" --n "$n" --rate "$rate" --hold "$hold" \
        --host "$host" --port "$port" "$@"
