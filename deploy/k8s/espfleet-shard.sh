#!/bin/sh
# The start step of an espfleet pod (deploy/k8s): which shard this pod is,
# then provision it (init container) or run it (main container).
#   espfleet-shard.sh provision | run | show
# The pod index: JOB_COMPLETION_INDEX (an Indexed Job), else the ordinal at
# the end of the pod name (a StatefulSet: espfleet-3 is pod 3; POD_NAME, or
# the host name, which is the pod name).
# From the espfleet-shards ConfigMap: ESPFLEET_SHARDS, ESPFLEET_FLEET_SIZE,
# ESPFLEET_SEED, ESPFLEET_KEY_POOL, ESPFLEET_PROVISION_JOBS.
set -eu

: "${ESPFLEET_SHARDS:?ESPFLEET_SHARDS is not set (ConfigMap espfleet-shards)}"
: "${ESPFLEET_FLEET_SIZE:?ESPFLEET_FLEET_SIZE is not set (ConfigMap espfleet-shards)}"
: "${ESPFLEET_SEED:?ESPFLEET_SEED is not set (ConfigMap espfleet-shards)}"

if [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
        index=$JOB_COMPLETION_INDEX
else
        name=${POD_NAME:-$(hostname)}
        index=${name##*-}
fi
case $index in
''|*[!0-9]*)
        echo "espfleet-shard: no pod index (JOB_COMPLETION_INDEX, or a pod name ending in -N): '$index'" >&2
        exit 2
        ;;
esac
shard=$index/$ESPFLEET_SHARDS
fleet=${ESPFLEET_FLEET_DIR:-/var/lib/espfleet/fleet}

case ${1:-} in
provision)
        # A re-created pod gets an empty emptyDir and makes the same devices
        # again (same seed, same index); a restarted container finds them and
        # makes none.
        echo "espfleet-shard: provisioning shard $shard of $ESPFLEET_FLEET_SIZE devices into $fleet" >&2
        exec "${ESPFLEET:-espfleet}" provision "$fleet" --pki "${ESPFLEET_PKI:-/etc/espfleet/pki}" \
                --count "$ESPFLEET_FLEET_SIZE" --shard "$shard" --seed "$ESPFLEET_SEED" \
                --key-pool "${ESPFLEET_KEY_POOL:-16}" --jobs "${ESPFLEET_PROVISION_JOBS:-1}"
        ;;
run)
        exec "${ESPFLEETD:-espfleetd}" -c "${ESPFLEET_CONFIG:-/etc/espfleet/k8s/espfleet.conf}" --shard "$shard"
        ;;
show)
        echo "shard=$shard"
        ;;
*)
        echo "usage: espfleet-shard.sh provision|run|show" >&2
        exit 2
        ;;
esac
