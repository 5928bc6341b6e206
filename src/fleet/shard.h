/* SPDX-License-Identifier: MIT */
#pragma once

/* Shards (issue #13): "I/N" is the I-th of N equal slices of a fleet of
 * TOTAL devices, by manifest index. Slice I holds the indexes
 * [floor(TOTAL*I/N), floor(TOTAL*(I+1)/N)): the slices are disjoint, cover
 * 0..TOTAL-1, and differ in size by at most one device. Pure arithmetic,
 * so the provisioning tool, the daemon and the deployment tests agree. */

#include <stdbool.h>

#define SHARD_COUNT_MAX 65536u

typedef struct Shard {
        unsigned index;         /* I: 0 <= index < count */
        unsigned count;         /* N; 0 = not sharded (the whole fleet) */
} Shard;

static inline bool shard_is_set(const Shard *s) {
        return s->count > 0;
}

/* "I/N" (decimal, 0 <= I < N <= SHARD_COUNT_MAX) -> *ret. -EINVAL on
 * anything else ("", "1/1", "-1/2", "2/2", " 0/2", "0/2x"). */
int shard_from_string(const char *s, Shard *ret);

/* The slice of shard `s` in a fleet of `total` devices: indexes
 * [*ret_first, *ret_first + *ret_count). An unset shard is the whole fleet.
 * *ret_count may be 0 (more shards than devices). */
void shard_range(const Shard *s, unsigned total, unsigned *ret_first, unsigned *ret_count);

/* Which of `count` shards of a fleet of `total` holds `index` (< total). */
unsigned shard_of_index(unsigned count, unsigned total, unsigned index);
