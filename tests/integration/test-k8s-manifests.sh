#!/usr/bin/env bash
# deploy/k8s without a cluster (issue #13): the kustomization renders (the
# same as `kubectl kustomize` when kubectl is installed), every object
# matches its Kubernetes API schema (npm kubernetes-models), the Job, the
# volumes, the Secret, the probes, the Prometheus annotations and the
# memory request fit together (tests/k8s/check.mjs). Then every pod's
# environment, as the Job controller gives it, runs the rendered start step:
# the pods are shards 0/N .. N-1/N, and provisioning them (with a smaller
# fleet) gives each pod its own devices, none shared, the same again for a
# re-created pod.
source "$(dirname "$0")/lib.sh"
CHECK=$SOURCE_DIR/tests/k8s

command -v node >/dev/null || fail "node is not installed (scripts/deps.sh installs nodejs)"
if [ ! -f "$CHECK/node_modules/kubernetes-models/package.json" ]; then
        command -v npm >/dev/null || fail "npm is not installed and $CHECK/node_modules is missing"
        log "npm ci in tests/k8s (kubernetes-models, yaml)"
        (cd "$CHECK" && npm ci --silent --no-audit --no-fund) >"$T/npm.log" 2>&1 || { cat "$T/npm.log" >&2; fail "npm ci"; }
fi

log "render, validate against the API schemas, check the pod"
node "$CHECK/check.mjs" "$SOURCE_DIR/deploy/k8s" "$T/render" >&2 || fail "tests/k8s/check.mjs"
# shellcheck disable=SC1091
source "$T/render/summary"
[ "$completions" -eq "$shards" ] || fail "completions $completions != shards $shards"
SCRIPT=$T/render/configmap/espfleet-shard.sh

# pod_env I CONTAINER: that container's environment, one NAME=VALUE a line.
pod_env() { cat "$T/render/pod-$1.$2.env"; }
# in_pod I CONTAINER [NAME=VALUE...] -- ARGS: the start step in exactly that
# environment (plus PATH and the overrides given).
in_pod() {
        local i=$1 c=$2; shift 2
        local extra=()
        while [ "$1" != -- ]; do extra+=("$1"); shift; done
        shift
        local env=()
        mapfile -t env < <(pod_env "$i" "$c")
        env -i PATH="$PATH" "${env[@]}" "${extra[@]}" sh "$SCRIPT" "$@"
}

log "every pod's shard, from its own environment"
: >"$T/shards"
for i in $(seq 0 $((completions - 1))); do
        for c in provision espfleetd; do
                in_pod "$i" "$c" -- show >>"$T/shards" || fail "pod $i, $c: the start step failed"
        done
done
seq 0 $((shards - 1)) | sed "s|.*|shard=&/$shards|" >"$T/want"
sort -u "$T/shards" | sort -t= -k2n >"$T/got"
diff "$T/want" "$T/got" >&2 || fail "the pods are not shards 0/$shards .. $((shards - 1))/$shards"
[ "$(wc -l <"$T/shards")" -eq $((2 * shards)) ] || fail "not one shard line per container"
for i in 0 $((shards - 1)); do
        [ "$(in_pod $i provision -- show)" = "$(in_pod $i espfleetd -- show)" ] || fail "pod $i: two containers, two shards"
done

log "a StatefulSet pod: the ordinal of its name; no index at all is refused"
[ "$(in_pod 0 espfleetd JOB_COMPLETION_INDEX= POD_NAME=espfleet-3 -- show)" = "shard=3/$shards" ] \
        || fail "POD_NAME espfleet-3 is not shard 3/$shards"
if in_pod 0 espfleetd JOB_COMPLETION_INDEX= POD_NAME=espfleet -- show >"$T/noindex.out" 2>&1; then
        fail "a pod without an index started"
fi
grep -q "no pod index" "$T/noindex.out" || fail "no reason given for a missing index"

log "each pod provisions its own devices (a fleet of 22 instead of $fleet_size; key pool 2)"
pki_init "$T/pki"
SMALL=(ESPFLEET=$ESPFLEET ESPFLEET_PKI=$T/pki ESPFLEET_FLEET_SIZE=22 ESPFLEET_KEY_POOL=2 ESPFLEET_PROVISION_JOBS=1)
for i in $(seq 0 $((completions - 1))); do
        in_pod "$i" provision "${SMALL[@]}" ESPFLEET_FLEET_DIR="$T/pod$i/fleet" -- provision >>"$T/provision.log" 2>&1 \
                || { tail "$T/provision.log" >&2; fail "pod $i: provisioning failed"; }
        tail -n +2 "$T/pod$i/fleet/manifest.csv" >"$T/pod$i.csv"
        [ -s "$T/pod$i.csv" ] || fail "pod $i provisioned nothing"
done
cat "$T"/pod*.csv >"$T/all.csv"
[ "$(wc -l <"$T/all.csv")" -eq 22 ] || fail "the pods made $(wc -l <"$T/all.csv") devices, not 22"
[ "$(cut -d, -f1 "$T/all.csv" | sort -n | xargs)" = "$(seq 0 21 | xargs)" ] || fail "the pods' indexes are not 0..21 once each"
[ "$(cut -d, -f2 "$T/all.csv" | sort -u | wc -l)" -eq 22 ] || fail "two pods share a device id"
i=$((completions - 1))
in_pod "$i" provision "${SMALL[@]}" ESPFLEET_FLEET_DIR="$T/again/fleet" -- provision >>"$T/provision.log" 2>&1 \
        || fail "re-created pod $i: provisioning failed"
cmp "$T/pod$i/fleet/manifest.csv" "$T/again/fleet/manifest.csv" || fail "a re-created pod $i got other devices"
in_pod "$i" provision "${SMALL[@]}" ESPFLEET_FLEET_DIR="$T/again/fleet" -- provision >"$T/restart.out" 2>&1 \
        || fail "a restarted init container failed"
grep -q "0 new devices" "$T/restart.out" || fail "a restarted init container made devices again"

log "the daemon's command line, and the rendered config, with each pod's shard"
cat >"$T/espfleetd-args" <<'SH'
#!/bin/sh
echo "$@"
SH
chmod +x "$T/espfleetd-args"
for i in $(seq 0 $((completions - 1))); do
        args=$(in_pod "$i" espfleetd ESPFLEETD="$T/espfleetd-args" -- run)
        [ "$args" = "-c /etc/espfleet/k8s/espfleet.conf --shard $i/$shards" ] || fail "pod $i runs espfleetd $args"
        # the rendered config, on the fleet this pod provisioned above: its
        # shard finds exactly the devices the pod made
        grep -q '^fleet_dir = ' "$T/render/configmap/espfleet.conf" || fail "the rendered config sets no fleet_dir"
        sed "s|^fleet_dir = .*|fleet_dir = \"$T/pod$i/fleet\";|" "$T/render/configmap/espfleet.conf" >"$T/pod$i.conf"
        "$ESPFLEETD" -c "$T/pod$i.conf" --shard "$i/$shards" --check-config >"$T/check.out" 2>&1 \
                || { cat "$T/check.out" >&2; fail "pod $i: espfleetd refuses the rendered config"; }
        grep -q "OK ($(wc -l <"$T/pod$i.csv") devices of $T/pod$i/fleet)" "$T/check.out" \
                || fail "pod $i: its shard does not find the pod's devices: $(cat "$T/check.out")"
done
echo "ok: deploy/k8s renders and validates; $shards pods are shards 0..$((shards - 1)) of $shards and make disjoint devices"
