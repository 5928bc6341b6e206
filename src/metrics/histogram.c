/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "basic/macro.h"
#include "metrics/histogram.h"

/* The layout of counts[] (unit 1, HDR-style):
 *
 *   bucket 0 holds 0 .. 2047 exactly: the index of v is v itself.
 *   bucket b >= 1 holds [2^(10+b), 2^(11+b)) in 1024 sub-buckets of width
 *   2^b. The sub-bucket of v is s = v >> b, which lies in 1024 .. 2047, and
 *   the index of v is b * 1024 + s.
 *
 * Bucket b >= 1 thus takes the indexes (b + 1) * 1024 .. (b + 2) * 1024 - 1,
 * right after those of bucket b - 1: the index grows with the value, and
 * 2^40 - 1 (bucket 29, sub-bucket 2047) lands on 31 * 1024 - 1, the last
 * element of HISTOGRAM_COUNTS_LEN. */

#define HALF_BITS (HISTOGRAM_SUB_BUCKET_BITS - 1)
#define SUB_BUCKET_MASK ((uint64_t) HISTOGRAM_SUB_BUCKET_COUNT - 1)

_Static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "__builtin_clzll() must take a uint64_t");
_Static_assert(HISTOGRAM_COUNTS_LEN == (HISTOGRAM_BUCKETS + 1) << HALF_BITS, "one half per bucket, plus one");

/* v | mask is never 0, so clzll() is defined; its top bit is 10 + b. */
static unsigned bucket_of(uint64_t value) {
        return (unsigned) (63 - __builtin_clzll(value | SUB_BUCKET_MASK)) - HALF_BITS;
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
        uint64_t r;

        return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t mul_sat(uint64_t a, uint64_t b) {
        uint64_t r;

        return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

size_t histogram_index_of(uint64_t value) {
        unsigned b;

        value = MIN(value, HISTOGRAM_HIGHEST);
        b = bucket_of(value);
        return ((size_t) b << HALF_BITS) + (size_t) (value >> b);
}

uint64_t histogram_value_at_index(size_t index) {
        unsigned b;

        index = MIN(index, (size_t) HISTOGRAM_COUNTS_LEN - 1);
        if (index < HISTOGRAM_SUB_BUCKET_COUNT)
                return index;

        /* index = b * 1024 + s with s in 1024 .. 2047, so index >> 10 = b + 1 */
        b = (unsigned) (index >> HALF_BITS) - 1;
        return (uint64_t) (index - ((size_t) b << HALF_BITS)) << b;
}

uint64_t histogram_lowest_equivalent(uint64_t value) {
        unsigned b;

        value = MIN(value, HISTOGRAM_HIGHEST);
        b = bucket_of(value);
        return value >> b << b;
}

uint64_t histogram_highest_equivalent(uint64_t value) {
        unsigned b;

        value = MIN(value, HISTOGRAM_HIGHEST);
        b = bucket_of(value);
        return value | ((UINT64_C(1) << b) - 1);
}

static uint64_t highest_at(size_t index) {
        return histogram_highest_equivalent(histogram_value_at_index(index));
}

void histogram_init(Histogram *h) {
        memset(h, 0, sizeof *h);
}

void histogram_reset(Histogram *h) {
        histogram_init(h);
}

bool histogram_is_empty(const Histogram *h) {
        /* A value is counted at index_of(min) as soon as there is a min. */
        return h->counts[histogram_index_of(h->min)] == 0;
}

/* Widen [min, max] to take in [lo, hi]. */
static void widen(Histogram *h, bool empty, uint64_t lo, uint64_t hi) {
        if (empty) {
                /* max first: a reader meanwhile sees [0, hi], a range that holds
                 * every count there is */
                h->max = hi;
                h->min = lo;
                return;
        }
        if (hi > h->max)
                h->max = hi;
        if (lo < h->min)
                h->min = lo;
}

void histogram_record_n(Histogram *h, uint64_t value, uint64_t n) {
        if (n == 0)
                return;

        if (value > HISTOGRAM_HIGHEST) {
                h->overflows += n;
                value = HISTOGRAM_HIGHEST;
        }

        /* The range first, then the count: a reader that walks [min, max]
         * meanwhile misses at most this value, and never walks off a count. */
        widen(h, histogram_is_empty(h), value, value);
        h->counts[histogram_index_of(value)] += n;
        h->total += n;
        h->sum = add_sat(h->sum, mul_sat(value, n));
}

void histogram_record(Histogram *h, uint64_t value) {
        histogram_record_n(h, value, 1);
}

/* Sum of counts[lo .. hi]; 0 if lo > hi (a reader saw min and max mid-update). */
static uint64_t sum_counts(const Histogram *h, size_t lo, size_t hi) {
        uint64_t n = 0;

        for (size_t i = lo; i <= hi; i++)
                n += h->counts[i];
        return n;
}

void histogram_merge(Histogram *dst, const Histogram *src) {
        /* src may be changing under us: read each bound once */
        uint64_t min = src->min, max = src->max, n = 0;
        size_t lo = histogram_index_of(min), hi = histogram_index_of(max);
        bool empty = histogram_is_empty(dst);

        for (size_t i = lo; i <= hi; i++) {
                uint64_t c = src->counts[i];

                dst->counts[i] += c;
                n += c;
        }
        if (n == 0)
                return; /* src is empty: its min and max of 0 mean nothing */

        widen(dst, empty, min, max);
        dst->total += src->total;
        dst->sum = add_sat(dst->sum, src->sum);
        dst->overflows += src->overflows;
}

uint64_t histogram_count(const Histogram *h) {
        return sum_counts(h, histogram_index_of(h->min), histogram_index_of(h->max));
}

/* ceil(p / 100 * count), in 1 .. count, for 0 < p < 100. p * count is formed
 * before the division, so that 99 % of 10000 comes out as 9900 and not as
 * 9900.000000000002; a product within 1e-12 of a whole number is taken as
 * that number, for the p that have no exact double (99.9). No libm: the
 * metrics library does not link it. */
static uint64_t rank_of(double p, uint64_t count) {
        double x = p * (double) count / 100.0;
        uint64_t r;

        if (x >= (double) count)
                return count;

        r = (uint64_t) (x + 0.5);               /* nearest */
        if ((double) r - x > x * 1e-12 || x - (double) r > x * 1e-12) {
                r = (uint64_t) x;               /* x >= 0: truncation is floor */
                if ((double) r < x)
                        r++;
        }
        return MIN(MAX(r, UINT64_C(1)), count);
}

uint64_t histogram_percentile(const Histogram *h, double p) {
        uint64_t min = h->min, max = h->max, count, rank, seen = 0;
        size_t lo = histogram_index_of(min), hi = histogram_index_of(max);

        count = sum_counts(h, lo, hi);
        if (count == 0)
                return 0;
        if (!(p > 0))           /* NaN too */
                return min;
        if (p >= 100)
                return max;

        rank = rank_of(p, count);
        for (size_t i = lo; i <= hi; i++) {
                seen += h->counts[i];
                if (seen >= rank)
                        return MIN(MAX(highest_at(i), min), max);
        }
        return max;             /* counts shrank under us (a reset) */
}

uint64_t histogram_count_le(const Histogram *h, uint64_t v) {
        uint64_t min = h->min, max = h->max;
        size_t lo = histogram_index_of(min), hi = histogram_index_of(max), last;

        if (v >= max)
                return sum_counts(h, lo, hi);

        /* The buckets up to v's own, and v's own only if v is its highest
         * value. A v that is not lies in bucket >= 1, so last >= 2048 here. */
        last = histogram_index_of(v);
        if (histogram_highest_equivalent(v) != v)
                last--;
        return sum_counts(h, lo, MIN(last, hi));
}
