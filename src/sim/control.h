/* SPDX-License-Identifier: MIT */
#pragma once

/* The control socket: a Unix stream socket (mode 0600) on the supervisor's
 * loop, where `espfleet status`, `espfleet top` and `espfleet command`
 * speak newline-terminated JSON (one request per line, one answer line per
 * request; control-client.h).
 *
 *   {"method":"status"}
 *       -> {"devices","workers","started","uptime_s","states":{state:n…},"online",
 *           "counters":{…},"histograms":{…},"slowest":[…10],"failed":[…50]}
 *   {"method":"device","id":"esp-…"}   -> a device object (metrics-json.h)
 *   {"method":"devices"}                -> {"devices":[…every device, in manifest order]}
 *   {"method":"command","action":"restart"|"power-cut"|"ota",
 *    "ids":[…] | "all":true | "range":[first,last], "url":"…" (ota only)}
 *       -> {"sent":n}: n devices addressed, in one WorkerCommand per run of
 *          consecutive manifest positions of a worker
 *   anything else -> {"error":"…"}, and the connection goes on.
 *
 * "slowest" are the devices with the highest max_connect_s; "failed" the
 * devices in state failed, no-connect or backoff or with a last error,
 * newest error first. A command that reached some workers and not others
 * answers {"sent":n,"error":"…"}. Range positions are manifest positions
 * (0-based lines of manifest.csv), within this daemon's share. */

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "basic/macro.h"
#include "metrics/metrics.h"
#include "sim/worker-proto.h"

typedef struct Control Control;

/* What the control server sees of one worker. */
typedef struct ControlWorker {
        const MetricsBlock *metrics;    /* the worker's block (kept across its restarts); not owned */
        size_t pos_first, count;        /* its share: manifest positions [pos_first, pos_first + count) */
} ControlWorker;

/* The supervisor's side, borrowed for the server's lifetime. */
typedef struct ControlContext {
        const ControlWorker *workers;   /* n_workers of them, in manifest order; not owned */
        unsigned n_workers;
        uint64_t started_usec;          /* CLOCK_REALTIME when the fleet was started */
        void *owner;
        /* Hands `cmd` to worker `worker` without blocking: 0, or a negative
         * errno (-ENOTCONN while the worker is being restarted). */
        int (*send_command)(void *owner, unsigned worker, const WorkerCommand *cmd);
} ControlContext;

/* The socket's path when control.socket is "": $RUNTIME_DIRECTORY/control
 * (the first of them, under systemd), else /run/espfleet/control for root,
 * else $XDG_RUNTIME_DIR/espfleet/control, else /tmp/espfleet-$UID/control.
 * 0 or -ENOMEM. */
int control_socket_default_path(char **ret);

/* Listens on `path` ("" or NULL: the default path), creating its parent
 * directory (0700) if missing and replacing a stale socket left by a daemon
 * that died. Refuses (-EADDRINUSE) if another daemon answers on it. On
 * failure `err` says which path and why. */
int control_new(sd_event *event, const char *path, const ControlContext *ctx, Control **ret, char *err,
                size_t errlen);
/* Closes every connection and removes the socket file (if it is still ours). */
Control *control_free(Control *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Control *, control_free);

/* The path listened on. */
const char *control_path(const Control *c);
