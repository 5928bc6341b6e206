/* SPDX-License-Identifier: MIT */
#pragma once

/* How many devices one worker process can hold within its open-file limit
 * (issue #16 §5), and so how many workers a fleet needs. Pure arithmetic.
 *
 * What a worker really holds (tests/integration/test-fleet-workers.sh counts
 * /proc/PID/fd against this):
 *   - FD_RESERVED_PER_WORKER for itself: stdio, epoll, signalfd, timerfds,
 *     the supervisor socket, devices.lock, the journal, curl's multi handle,
 *     a device loading (its eFuse and flash files, for a moment), slack;
 *   - FDS_PER_DEVICE per device: its MQTT socket (libmosquitto's socketpair
 *     is refused, and a device's flash image is open only while it is used);
 *   - FDS_PER_DOWNLOAD per concurrent OTA download (ota.max_concurrent):
 *     the HTTPS socket and the flash image being written. */

#include <stddef.h>

#define FD_RESERVED_PER_WORKER 64u
#define FDS_PER_DEVICE 1u
#define FDS_PER_DOWNLOAD 2u

/* Devices one worker can hold with `nofile` fds and `max_downloads`
 * concurrent downloads; 0 when not even one fits. */
unsigned fd_budget_devices(unsigned nofile, unsigned max_downloads);

/* fds a worker of `n_devices` needs at most. */
unsigned fd_budget_needed(unsigned n_devices, unsigned max_downloads);

/* Workers for `n_devices`: `workers` if set (> 0), else enough for
 * `per_worker` devices each (0 = as many as the budget allows); never more
 * devices per worker than `budget`, never more workers than devices.
 * Returns the count, or -ERANGE with err filled when `workers` was set and
 * cannot hold the fleet within the budget, or no device fits at all. */
int fd_budget_workers(unsigned n_devices, unsigned workers, unsigned per_worker, unsigned budget,
                      char *err, size_t errlen);
