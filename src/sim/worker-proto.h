/* SPDX-License-Identifier: MIT */
#pragma once

/* What a worker tells the main process over its SOCK_SEQPACKET socketpair
 * (fd 3 in the worker): one fixed-size datagram per second. */

#include <errno.h>
#include <stdint.h>

#define WORKER_FD 3
/* The worker's metrics block (metrics/metrics.h), a memfd the main process
 * keeps across worker restarts. */
#define WORKER_METRICS_FD 4
/* The supervisor's effective config (libconfig text in a memfd): a worker
 * reads it as "/dev/fd/5", at start and on SIGHUP, never the file on disk. */
#define WORKER_CONFIG_FD 5
#define WORKER_CONFIG_PATH "/dev/fd/5"

typedef struct WorkerReport {
        uint32_t magic;                 /* WORKER_REPORT_MAGIC */
        uint32_t total, online, connecting, failed;
        uint64_t msgs_in, msgs_out;
        uint8_t ramp_done;
        uint8_t stopped;
} WorkerReport;

#define WORKER_REPORT_MAGIC 0x45535057u /* "ESPW" */

/* What the main process asks of a worker, over the same socket. */
typedef enum WorkerCommandType {
        WORKER_COMMAND_RESTART,         /* as /esp/restart */
        WORKER_COMMAND_POWER_CUT,       /* power off at once, then boot again */
        WORKER_COMMAND_OTA,             /* as /esp/update/run, with `url` if set */
        WORKER_COMMAND_STORM,           /* scenario.storm: every connection drops at once */
        _WORKER_COMMAND_MAX,
        _WORKER_COMMAND_INVALID = -EINVAL,
} WorkerCommandType;

typedef struct WorkerCommand {
        uint32_t magic;                 /* WORKER_COMMAND_MAGIC */
        uint32_t type;                  /* WorkerCommandType */
        uint64_t pos_first, count;      /* manifest positions, within the worker's share */
        char url[512];                  /* WORKER_COMMAND_OTA: "" = the device's saved URL */
} WorkerCommand;

#define WORKER_COMMAND_MAGIC 0x45535043u /* "ESPC" */
