/* SPDX-License-Identifier: MIT */
#pragma once

/* What a worker tells the main process over its SOCK_SEQPACKET socketpair
 * (fd 3 in the worker): one fixed-size datagram per second. */

#include <stdint.h>

#define WORKER_FD 3

typedef struct WorkerReport {
        uint32_t magic;                 /* WORKER_REPORT_MAGIC */
        uint32_t total, online, connecting, failed;
        uint64_t msgs_in, msgs_out;
        uint8_t ramp_done;
        uint8_t stopped;
} WorkerReport;

#define WORKER_REPORT_MAGIC 0x45535057u /* "ESPW" */
