/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <time.h>

/* The clock's time in µs (CLOCK_MONOTONIC: intervals, sd-event times;
 * CLOCK_REALTIME: wall-clock stamps in reports and payloads). */
uint64_t now_usec(clockid_t clock);
