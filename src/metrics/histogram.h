/* SPDX-License-Identifier: MIT */
#pragma once

/* An HDR-style histogram of non-negative integers (microseconds, bytes per
 * second): log-linear buckets that keep 3 significant decimal digits over
 * 1 .. HISTOGRAM_HIGHEST. Each power of two above 2048 is split into 1024
 * equal sub-buckets, so a recorded value is known to within 1/1024 of
 * itself (better than 0.1 %).
 *
 * The struct is plain data of a fixed size, with no pointers: it lives in
 * memory shared between a worker (the only writer) and the supervisor (a
 * reader), and histograms of different workers merge by adding their
 * counts. A reader may see a histogram in the middle of an update: every
 * function here works from the counts themselves, so such a view is off by
 * at most the values being recorded at that instant. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HISTOGRAM_SUB_BUCKET_BITS 11                           /* 2048: 3 significant digits */
#define HISTOGRAM_SUB_BUCKET_COUNT (1u << HISTOGRAM_SUB_BUCKET_BITS)
#define HISTOGRAM_SUB_BUCKET_HALF (HISTOGRAM_SUB_BUCKET_COUNT / 2)
#define HISTOGRAM_HIGHEST_BITS 40                              /* values up to 2^40 - 1 (12.7 days in µs) */
#define HISTOGRAM_HIGHEST ((UINT64_C(1) << HISTOGRAM_HIGHEST_BITS) - 1)
#define HISTOGRAM_BUCKETS (HISTOGRAM_HIGHEST_BITS - HISTOGRAM_SUB_BUCKET_BITS + 1)
#define HISTOGRAM_COUNTS_LEN ((HISTOGRAM_BUCKETS + 1) * HISTOGRAM_SUB_BUCKET_HALF)

typedef struct Histogram {
        uint64_t total;                 /* values recorded */
        uint64_t sum;                   /* of the values as recorded (for _sum in Prometheus) */
        uint64_t min, max;              /* exact, of the values recorded; 0 while empty */
        uint64_t overflows;             /* values above HISTOGRAM_HIGHEST, recorded as HISTOGRAM_HIGHEST */
        uint64_t counts[HISTOGRAM_COUNTS_LEN];
} Histogram;

/* A zero-filled Histogram is empty (fresh shared memory needs nothing). */
void histogram_init(Histogram *h);

/* Whether nothing is counted: the bucket of min holds nothing. O(1). */
bool histogram_is_empty(const Histogram *h);

/* O(1), no allocation. n == 0 records nothing. */
void histogram_record(Histogram *h, uint64_t value);
void histogram_record_n(Histogram *h, uint64_t value, uint64_t n);

/* dst += src: adds the counts over the buckets of [src->min, src->max] only,
 * so that merging a sparse histogram is cheap; an empty src changes nothing. */
void histogram_merge(Histogram *dst, const Histogram *src);
void histogram_reset(Histogram *h);

/* Number of values counted (the sum of the buckets, not h->total). */
uint64_t histogram_count(const Histogram *h);

/* The value at percentile p (0..100): the highest value equivalent to the
 * bucket that holds the value of rank ceil(p / 100 * count) (at least 1),
 * clamped to [min, max]. p <= 0 (or NaN) gives min, p >= 100 max, and an
 * empty histogram 0. */
uint64_t histogram_percentile(const Histogram *h, double p);

/* Number of values whose bucket lies entirely at or below `v`: the
 * cumulative count of a Prometheus bucket `le`. Monotonic in v; exact when v
 * is the highest equivalent value of a bucket, and all of them when v >= max. */
uint64_t histogram_count_le(const Histogram *h, uint64_t v);

/* The bucket arithmetic, for tests and for readers that walk the counts.
 * Values 0 .. 2047 have an index each (index = value); above, the index of
 * v in [2^(10+b), 2^(11+b)), b >= 1, is b * 1024 + (v >> b). The index grows
 * with the value. A value above HISTOGRAM_HIGHEST is taken as
 * HISTOGRAM_HIGHEST, as histogram_record() does. The lowest and highest
 * equivalent values of v are the first and last value that share its
 * counts[] element, counts[histogram_index_of(v)]. */
size_t histogram_index_of(uint64_t value);
uint64_t histogram_lowest_equivalent(uint64_t value);
uint64_t histogram_highest_equivalent(uint64_t value);

/* The lowest value counted at counts[index] (an index past the end is taken
 * as the last one): histogram_index_of(histogram_value_at_index(i)) == i. */
uint64_t histogram_value_at_index(size_t index);
