/* SPDX-License-Identifier: MIT */
#pragma once

/* One-line progress text for long CLI runs (provisioning): pure formatting,
 * the caller decides where and how often to draw it. */

#include <stddef.h>
#include <stdint.h>

/* "0:07", "12:34", "1:02:03" for a duration in seconds (rounded up, so an
 * ETA never shows 0:00 while work remains); "--:--" when unknown (negative,
 * NaN or beyond 99 hours). Returns buf. */
char *format_eta(char *buf, size_t size, double seconds);

/* "[########..........]  1234/20000  345/s  ETA 0:48" with a bar of `bar`
 * characters. The rate is done/elapsed; rate and ETA show "--" until
 * something is done and time has passed. done is clamped to total. Returns buf. */
char *progress_format(char *buf, size_t size, uint64_t done, uint64_t total, double elapsed_s, unsigned bar);
