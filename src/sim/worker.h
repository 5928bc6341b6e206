/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* A worker process (espfleetd --worker): runs the devices at manifest
 * positions [pos_first, pos_first + count) on its own sd-event loop, holds
 * their run locks, and reports to the main process on fd WORKER_FD. Returns
 * when stopped (SIGTERM, or the main process went away). */
int worker_run(const char *config_path, unsigned index, unsigned n_workers, size_t pos_first, size_t count);
