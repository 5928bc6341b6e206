/* SPDX-License-Identifier: MIT */
#pragma once

/* The fleet manager of one worker process: owns its sd-event loop's MQTT
 * loop, the shared CA store, the devices of its share, the ramp and the
 * connection-rate token bucket. */

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "fleet/fleet-dir.h"
#include "metrics/metrics.h"
#include "sim/config.h"
#include "sim/worker-proto.h"

typedef struct Manager Manager;

typedef struct ManagerStats {
        uint32_t total;
        uint32_t online;
        uint32_t connecting;            /* booting, connecting, backoff, restarting */
        uint32_t failed;
        uint64_t msgs_in;
        uint64_t msgs_out;
        bool ramp_done;                 /* every device had its first connection outcome */
        bool stopped;                   /* after manager_stop(): every device is off */
        uint32_t ota_active;            /* downloads running (ota.max_concurrent) */
        uint32_t ota_queued;            /* devices waiting for a download slot */
        uint64_t boot_cache_hits;       /* boots whose image was verified before (ota/boot-cache.h) */
        uint64_t boot_cache_misses;
} ManagerStats;

/* Takes the devices at manifest positions [pos_first, pos_first + n) of
 * `fleet` (borrowed). `n_workers` scales the fleet-wide rates down to this
 * worker's share. `metrics` (borrowed, laid out for n devices) receives the
 * worker's measurements; NULL: the manager keeps a private block. */
int manager_new(sd_event *e, const DaemonConfig *c, Fleet *fleet, size_t pos_first, size_t n,
                unsigned n_workers, MetricsBlock *metrics, Manager **ret, char *err, size_t errlen);
Manager *manager_free(Manager *m);

/* Starts the ramp: devices come up at ramp.rate / n_workers per second. */
int manager_start(Manager *m);
/* Clean shutdown: every online device publishes its offline status and
 * sends DISCONNECT; `done` is called once every device is off. */
void manager_stop(Manager *m, void (*done)(Manager *m, void *userdata), void *userdata);
/* Applies the live keys of a re-read config; logs the ones that need a restart. */
void manager_reload(Manager *m, const DaemonConfig *c);
void manager_get_stats(Manager *m, ManagerStats *ret);
/* A command from the main process (the control socket) for the devices at
 * manifest positions [pos_first, pos_first + count) of this worker's share.
 * Returns the number of devices it reached. */
size_t manager_command(Manager *m, WorkerCommandType type, size_t pos_first, size_t count, const char *url);
/* Brings the metrics block's gauges up to date (before each report). */
void manager_update_gauges(Manager *m);
/* One summary line in the daemon log. */
void manager_log_summary(Manager *m, const char *prefix);
