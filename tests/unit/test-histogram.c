/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <criterion/parameterized.h>

#include "basic/macro.h"
#include "metrics/histogram.h"

#define LAST_INDEX ((size_t) HISTOGRAM_COUNTS_LEN - 1)

/* Percentiles in hundredths of a percent, so that the exact rank
 * ceil(p / 100 * n) is integer arithmetic here. */
static const unsigned percentiles_x100[] = {
        1, 10, 100, 1000, 2500, 5000, 7500, 9000, 9500, 9900, 9990, 9999, 10000,
};

static Histogram *histogram_new(void) {
        Histogram *h = calloc(1, sizeof *h);

        cr_assert_not_null(h);
        return h;
}

/* splitmix64: small, seedable, the same on every machine */
static uint64_t rng_next(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static double rng_unit(uint64_t *state) {
        return (double) (rng_next(state) >> 11) / (double) (UINT64_C(1) << 53);
}

/* e^x for 0 <= x < 21, without libm (the test is not linked with it):
 * x = k ln 2 + r, with 0 <= r < ln 2 summed as a Taylor series. */
static double exp_nonneg(double x) {
        const double ln2 = 0.69314718055994530942;
        double term = 1, sum = 1;
        unsigned k = 0;

        while (x >= ln2) {
                x -= ln2;
                k++;
        }
        for (int n = 1; n < 30; n++) {
                term *= x / n;
                sum += term;
        }
        return sum * (double) (UINT64_C(1) << k);
}

typedef enum Distribution {
        DIST_SMALL,             /* 0 .. 4095: the exact bucket and the first split one */
        DIST_UNIFORM,           /* 0 .. 10^6 */
        DIST_FULL,              /* 0 .. 2^40 - 1 */
        DIST_LOG_UNIFORM,       /* 1 .. 10^9, uniform in log v */
        _DIST_MAX,
} Distribution;

static uint64_t draw(Distribution d, uint64_t *state) {
        switch (d) {
        case DIST_SMALL:
                return rng_next(state) % 4096;
        case DIST_UNIFORM:
                return rng_next(state) % 1000001;
        case DIST_FULL:
                return rng_next(state) & HISTOGRAM_HIGHEST;
        case DIST_LOG_UNIFORM: {
                uint64_t v = (uint64_t) exp_nonneg(rng_unit(state) * 20.723265836946411); /* ln 10^9 */

                return MIN(MAX(v, UINT64_C(1)), UINT64_C(1000000000));
        }
        case _DIST_MAX:
                break;
        }
        cr_assert_fail("bad distribution %d", (int) d);
        return 0;
}

static uint64_t *draw_values(Distribution d, uint64_t seed, size_t n) {
        uint64_t *v = calloc(n, sizeof *v);

        cr_assert_not_null(v);
        for (size_t i = 0; i < n; i++)
                v[i] = draw(d, &seed);
        return v;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return (x > y) - (x < y);
}

static void record_all(Histogram *h, const uint64_t *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                histogram_record(h, v[i]);
}

/* The value of rank ceil(p / 100 * n), at least 1, of a sorted array. */
static uint64_t exact_percentile(const uint64_t *sorted, size_t n, unsigned p_x100) {
        uint64_t rank = ((uint64_t) p_x100 * n + 9999) / 10000;

        return sorted[MAX(rank, UINT64_C(1)) - 1];
}

/* Number of values <= v in a sorted array. */
static uint64_t exact_count_le(const uint64_t *sorted, size_t n, uint64_t v) {
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (sorted[mid] <= v)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

Test(histogram, layout) {
        cr_assert_eq(sizeof(Histogram), 5 * sizeof(uint64_t) + HISTOGRAM_COUNTS_LEN * sizeof(uint64_t));
        cr_assert_eq(HISTOGRAM_COUNTS_LEN, 31744);

        for (uint64_t v = 0; v < HISTOGRAM_SUB_BUCKET_COUNT; v++) {
                cr_assert_eq(histogram_index_of(v), v);
                cr_assert_eq(histogram_lowest_equivalent(v), v);
                cr_assert_eq(histogram_highest_equivalent(v), v);
        }
        /* the first split power of two: sub-buckets of width 2 */
        cr_assert_eq(histogram_index_of(2048), 2048);
        cr_assert_eq(histogram_index_of(2049), 2048);
        cr_assert_eq(histogram_index_of(2050), 2049);
        cr_assert_eq(histogram_highest_equivalent(2048), 2049);
        cr_assert_eq(histogram_index_of(4095), 3071);
        cr_assert_eq(histogram_index_of(4096), 3072);
        cr_assert_eq(histogram_highest_equivalent(4096), 4099);

        cr_assert_eq(histogram_index_of(HISTOGRAM_HIGHEST), LAST_INDEX);
        cr_assert_eq(histogram_index_of(HISTOGRAM_HIGHEST + 1), LAST_INDEX);
        cr_assert_eq(histogram_index_of(UINT64_MAX), LAST_INDEX);
        cr_assert_eq(histogram_highest_equivalent(HISTOGRAM_HIGHEST), HISTOGRAM_HIGHEST);
        cr_assert_eq(histogram_highest_equivalent(UINT64_MAX), HISTOGRAM_HIGHEST);
        cr_assert_eq(histogram_lowest_equivalent(HISTOGRAM_HIGHEST), UINT64_C(2047) << 29);
        cr_assert_eq(histogram_value_at_index(HISTOGRAM_COUNTS_LEN), histogram_value_at_index(LAST_INDEX));
}

/* Every counts[] element is one contiguous run of values, the runs tile
 * 0 .. HISTOGRAM_HIGHEST in order, and none is wider than 1/1024 of its
 * lowest value (beyond the exact bucket). */
Test(histogram, index_round_trip) {
        uint64_t next = 0;

        for (size_t i = 0; i < HISTOGRAM_COUNTS_LEN; i++) {
                uint64_t lo = histogram_value_at_index(i), hi = histogram_highest_equivalent(lo);

                cr_assert_eq(lo, next, "index %zu", i);
                cr_assert_eq(histogram_index_of(lo), i);
                cr_assert_eq(histogram_index_of(hi), i);
                cr_assert_eq(histogram_lowest_equivalent(hi), lo);
                cr_assert_eq(histogram_highest_equivalent(hi), hi);
                cr_assert_eq(histogram_lowest_equivalent((lo + hi) / 2), lo);
                if (i >= HISTOGRAM_SUB_BUCKET_COUNT)
                        cr_assert_leq(hi - lo + 1, lo / HISTOGRAM_SUB_BUCKET_HALF, "index %zu", i);
                next = hi + 1;
        }
        cr_assert_eq(next, HISTOGRAM_HIGHEST + 1);
}

Test(histogram, empty) {
        _cleanup_free_ Histogram *h = histogram_new();

        cr_assert(histogram_is_empty(h));
        cr_assert_eq(histogram_count(h), 0);
        cr_assert_eq(histogram_percentile(h, 0), 0);
        cr_assert_eq(histogram_percentile(h, 50), 0);
        cr_assert_eq(histogram_percentile(h, 100), 0);
        cr_assert_eq(histogram_count_le(h, 0), 0);
        cr_assert_eq(histogram_count_le(h, UINT64_MAX), 0);

        histogram_record_n(h, 1234, 0);
        cr_assert(histogram_is_empty(h));
        cr_assert_eq(h->total, 0);
        cr_assert_eq(h->max, 0);
}

Test(histogram, one_to_ten_thousand) {
        _cleanup_free_ Histogram *h = histogram_new();
        uint64_t p50, p99;

        for (uint64_t v = 1; v <= 10000; v++)
                histogram_record(h, v);

        cr_assert_eq(h->total, 10000);
        cr_assert_eq(histogram_count(h), 10000);
        cr_assert_eq(h->sum, UINT64_C(50005000));
        cr_assert_eq(h->min, 1);
        cr_assert_eq(h->max, 10000);
        cr_assert_eq(h->overflows, 0);

        p50 = histogram_percentile(h, 50);
        p99 = histogram_percentile(h, 99);
        cr_assert(p50 >= 5000 && p50 <= 5005, "p50 %" PRIu64, p50);
        cr_assert(p99 >= 9900 && p99 <= 9910, "p99 %" PRIu64, p99);
        cr_assert_eq(p50, histogram_highest_equivalent(5000));
        cr_assert_eq(p99, histogram_highest_equivalent(9900));
        cr_assert_eq(histogram_percentile(h, 100), 10000);
        cr_assert_eq(histogram_percentile(h, 0), 1);
        cr_assert_eq(histogram_percentile(h, -3), 1);
        cr_assert_eq(histogram_percentile(h, 250), 10000);
        cr_assert_eq(histogram_percentile(h, __builtin_nan("")), 1);
        /* rank 1 is the smallest value */
        cr_assert_eq(histogram_percentile(h, 0.001), 1);
}

Test(histogram, small_values_exact) {
        _cleanup_free_ Histogram *h = histogram_new();

        for (uint64_t v = 0; v < HISTOGRAM_SUB_BUCKET_COUNT; v++)
                histogram_record(h, v);

        cr_assert_eq(h->min, 0);
        cr_assert_eq(h->max, 2047);
        cr_assert(!histogram_is_empty(h));
        for (uint64_t v = 0; v < HISTOGRAM_SUB_BUCKET_COUNT; v++) {
                cr_assert_eq(h->counts[v], 1);
                cr_assert_eq(histogram_count_le(h, v), v + 1);
                /* rank v + 1 of 2048 is p = 100 (v + 1) / 2048, exact in binary */
                cr_assert_eq(histogram_percentile(h, 100.0 * (double) (v + 1) / 2048.0), v, "v %" PRIu64, v);
        }
        cr_assert_eq(histogram_count(h), 2048);
}

Test(histogram, zero_only) {
        _cleanup_free_ Histogram *h = histogram_new();

        histogram_record_n(h, 0, 3);
        cr_assert(!histogram_is_empty(h));
        cr_assert_eq(histogram_count(h), 3);
        cr_assert_eq(h->min, 0);
        cr_assert_eq(h->max, 0);
        cr_assert_eq(histogram_percentile(h, 50), 0);
        cr_assert_eq(histogram_count_le(h, 0), 3);
}

Test(histogram, highest_and_overflow) {
        _cleanup_free_ Histogram *h = histogram_new();

        histogram_record(h, HISTOGRAM_HIGHEST - 1000);
        cr_assert_eq(h->min, HISTOGRAM_HIGHEST - 1000);
        cr_assert_eq(h->max, HISTOGRAM_HIGHEST - 1000);
        cr_assert_eq(h->overflows, 0);
        cr_assert_eq(h->counts[LAST_INDEX], 1);
        /* clamped to max, not the bucket's top */
        cr_assert_eq(histogram_percentile(h, 50), HISTOGRAM_HIGHEST - 1000);

        histogram_record(h, HISTOGRAM_HIGHEST);
        histogram_record(h, HISTOGRAM_HIGHEST + 1);
        histogram_record_n(h, UINT64_MAX, 2);
        cr_assert_eq(h->overflows, 3);
        cr_assert_eq(h->total, 5);
        cr_assert_eq(h->max, HISTOGRAM_HIGHEST);
        cr_assert_eq(h->counts[LAST_INDEX], 5);
        cr_assert_eq(h->sum, 5 * HISTOGRAM_HIGHEST - 1000);
        cr_assert_eq(histogram_count(h), 5);
        cr_assert_eq(histogram_percentile(h, 99), HISTOGRAM_HIGHEST);
        cr_assert_eq(histogram_count_le(h, HISTOGRAM_HIGHEST - 1), 0);
        cr_assert_eq(histogram_count_le(h, HISTOGRAM_HIGHEST), 5);
}

Test(histogram, sum_saturates) {
        _cleanup_free_ Histogram *h = histogram_new();

        /* (2^40 - 1) 2^24 = 2^64 - 2^24 still fits; twice that does not */
        histogram_record_n(h, HISTOGRAM_HIGHEST, UINT64_C(1) << 24);
        cr_assert_eq(h->sum, HISTOGRAM_HIGHEST << 24);
        histogram_record_n(h, HISTOGRAM_HIGHEST, UINT64_C(1) << 24);
        cr_assert_eq(h->sum, UINT64_MAX);
        histogram_record(h, 1);
        cr_assert_eq(h->sum, UINT64_MAX);
        cr_assert_eq(h->total, (UINT64_C(1) << 25) + 1);
}

Test(histogram, sum_and_total) {
        const size_t n = 50000;
        _cleanup_free_ Histogram *h = histogram_new();
        _cleanup_free_ uint64_t *v = draw_values(DIST_FULL, 7, n);
        uint64_t sum = 0;

        for (size_t i = 0; i < n; i++)
                sum += v[i];
        record_all(h, v, n);
        histogram_record_n(h, 5, 10);
        cr_assert_eq(h->total, n + 10);
        cr_assert_eq(histogram_count(h), n + 10);
        cr_assert_eq(h->sum, sum + 50);
}

Test(histogram, reset) {
        _cleanup_free_ Histogram *h = histogram_new(), *zero = histogram_new();

        histogram_record(h, 17);
        histogram_record(h, UINT64_MAX);
        histogram_reset(h);
        cr_assert(histogram_is_empty(h));
        cr_assert_eq(memcmp(h, zero, sizeof *h), 0);
        histogram_record(h, 3000);
        cr_assert_eq(h->min, 3000);
        cr_assert_eq(h->max, 3000);
}

/* A reader that catches the writer between min and max sees them crossed:
 * it must count nothing rather than walk off. */
Test(histogram, crossed_range) {
        _cleanup_free_ Histogram *h = histogram_new(), *dst = histogram_new();

        h->min = 100000;
        h->counts[histogram_index_of(100000)] = 1;
        cr_assert_eq(histogram_count(h), 0);
        cr_assert_eq(histogram_percentile(h, 50), 0);
        cr_assert_eq(histogram_count_le(h, 50), 0);
        histogram_merge(dst, h);
        cr_assert(histogram_is_empty(dst));
        cr_assert_eq(dst->min, 0);
}

typedef struct AccuracyCase {
        Distribution dist;
        uint64_t seed;
} AccuracyCase;

static AccuracyCase accuracy_cases[] = {
        { DIST_SMALL, 1 },       { DIST_SMALL, 2 },
        { DIST_UNIFORM, 1 },     { DIST_UNIFORM, 2 },      { DIST_UNIFORM, 3 },
        { DIST_FULL, 1 },        { DIST_FULL, 42 },
        { DIST_LOG_UNIFORM, 1 }, { DIST_LOG_UNIFORM, 2 }, { DIST_LOG_UNIFORM, 3 }, { DIST_LOG_UNIFORM, 1234 },
};

ParameterizedTestParameters(histogram, percentile_accuracy) {
        return cr_make_param_array(AccuracyCase, accuracy_cases, ELEMENTSOF(accuracy_cases));
}

/* Each percentile is within 1/1024 of the exact one, above it, and in the
 * same counts[] element. */
ParameterizedTest(const AccuracyCase *c, histogram, percentile_accuracy) {
        const size_t n = 20011; /* prime: most ranks are not whole */
        _cleanup_free_ Histogram *h = histogram_new();
        _cleanup_free_ uint64_t *v = draw_values(c->dist, c->seed, n);

        record_all(h, v, n);
        qsort(v, n, sizeof *v, cmp_u64);
        cr_assert_eq(h->min, v[0]);
        cr_assert_eq(h->max, v[n - 1]);

        for (size_t i = 0; i < ELEMENTSOF(percentiles_x100); i++) {
                unsigned p = percentiles_x100[i];
                uint64_t want = exact_percentile(v, n, p), got = histogram_percentile(h, p / 100.0);

                cr_assert_geq(got, want, "dist %d seed %" PRIu64 " p %u", (int) c->dist, c->seed, p);
                cr_assert_leq(got - want, want / 1024, "dist %d seed %" PRIu64 " p %u: %" PRIu64 " vs %" PRIu64,
                              (int) c->dist, c->seed, p, got, want);
                cr_assert_eq(histogram_index_of(got), histogram_index_of(want));
        }
}

static void assert_same(const Histogram *a, const Histogram *b) {
        cr_assert_eq(a->total, b->total);
        cr_assert_eq(a->sum, b->sum);
        cr_assert_eq(a->min, b->min);
        cr_assert_eq(a->max, b->max);
        cr_assert_eq(a->overflows, b->overflows);
        cr_assert_eq(memcmp(a->counts, b->counts, sizeof a->counts), 0);
        for (size_t i = 0; i < ELEMENTSOF(percentiles_x100); i++)
                cr_assert_eq(histogram_percentile(a, percentiles_x100[i] / 100.0),
                             histogram_percentile(b, percentiles_x100[i] / 100.0));
}

Test(histogram, merge_equals_union) {
        const size_t n = 10000;
        _cleanup_free_ Histogram *a = histogram_new(), *b = histogram_new(), *all = histogram_new();
        _cleanup_free_ uint64_t *va = draw_values(DIST_LOG_UNIFORM, 11, n), *vb = draw_values(DIST_UNIFORM, 12, n);

        record_all(a, va, n);
        histogram_record(a, UINT64_MAX);        /* an overflow travels too */
        record_all(b, vb, n);
        record_all(all, va, n);
        histogram_record(all, UINT64_MAX);
        record_all(all, vb, n);

        histogram_merge(a, b);
        assert_same(a, all);
        cr_assert_eq(histogram_count(a), 2 * n + 1);
}

Test(histogram, merge_disjoint) {
        _cleanup_free_ Histogram *a = histogram_new(), *b = histogram_new(), *all = histogram_new();

        for (uint64_t v = 10; v <= 100; v++) {
                histogram_record(a, v);
                histogram_record(all, v);
        }
        for (uint64_t v = 1000000; v <= 10000000; v += 997) {
                histogram_record(b, v);
                histogram_record(all, v);
        }
        /* the small one into the large one: min moves down */
        histogram_merge(b, a);
        assert_same(b, all);
        cr_assert_eq(b->min, 10);
}

Test(histogram, merge_empty) {
        _cleanup_free_ Histogram *a = histogram_new(), *copy = histogram_new(), *empty = histogram_new();

        for (uint64_t v = 5000; v < 6000; v++)
                histogram_record(a, v * 3);
        memcpy(copy, a, sizeof *a);

        /* empty into a histogram: nothing changes, min stays 15000 */
        histogram_merge(a, empty);
        cr_assert_eq(memcmp(a, copy, sizeof *a), 0);

        /* a histogram into empty: a copy */
        histogram_merge(empty, a);
        assert_same(empty, copy);

        /* empty into empty: still empty */
        histogram_reset(a);
        histogram_reset(copy);
        histogram_merge(a, copy);
        cr_assert(histogram_is_empty(a));
        cr_assert_eq(a->total, 0);
}

/* min == max == 0 is not emptiness when 0 was recorded. */
Test(histogram, merge_zeros) {
        _cleanup_free_ Histogram *a = histogram_new(), *zeros = histogram_new(), *dst = histogram_new();

        histogram_record_n(zeros, 0, 4);
        histogram_merge(dst, zeros);
        assert_same(dst, zeros);

        histogram_record(a, 500);
        histogram_merge(a, zeros);
        cr_assert_eq(a->min, 0);
        cr_assert_eq(a->max, 500);
        cr_assert_eq(histogram_count(a), 5);
        cr_assert_eq(histogram_count_le(a, 0), 4);
}

Test(histogram, count_le) {
        const size_t n = 30000;
        _cleanup_free_ Histogram *h = histogram_new();
        _cleanup_free_ uint64_t *v = draw_values(DIST_LOG_UNIFORM, 99, n);
        uint64_t seed = 5, prev = 0;

        record_all(h, v, n);
        qsort(v, n, sizeof *v, cmp_u64);

        cr_assert_eq(histogram_count_le(h, 0), 0);
        cr_assert_eq(histogram_count_le(h, v[0] - 1), 0);
        cr_assert_eq(histogram_count_le(h, v[n - 1]), n);
        cr_assert_eq(histogram_count_le(h, UINT64_MAX), n);

        /* exact at every highest-equivalent value up to max */
        for (size_t i = 0; i <= histogram_index_of(v[n - 1]); i++) {
                uint64_t top = histogram_highest_equivalent(histogram_value_at_index(i)), got;

                got = histogram_count_le(h, top);
                cr_assert_eq(got, exact_count_le(v, n, top), "le %" PRIu64, top);
                cr_assert_geq(got, prev);
                prev = got;
        }

        /* monotone over arbitrary v, and never above the exact count */
        prev = 0;
        for (uint64_t x = 0; x < 2000000000; x += 1 + rng_next(&seed) % 200000) {
                uint64_t got = histogram_count_le(h, x);

                cr_assert_geq(got, prev, "le %" PRIu64, x);
                cr_assert_leq(got, exact_count_le(v, n, x), "le %" PRIu64, x);
                prev = got;
        }
}

/* Prometheus-style bounds on a sparse histogram: le = 10^k. */
Test(histogram, count_le_decades) {
        _cleanup_free_ Histogram *h = histogram_new();

        for (uint64_t v = 1; v <= 1000000; v *= 10)
                histogram_record(h, v);

        /* 1 .. 1000 are counted exactly; 10^4 .. 10^6 share their elements
         * with neighbours, so an le of 10^4 leaves 10^4 out */
        cr_assert_eq(histogram_count_le(h, 1), 1);
        cr_assert_eq(histogram_count_le(h, 999), 3);
        cr_assert_eq(histogram_count_le(h, 1000), 4);
        cr_assert_eq(histogram_count_le(h, 10000), 4);
        cr_assert_eq(histogram_count_le(h, histogram_highest_equivalent(10000)), 5);
        cr_assert_eq(histogram_count_le(h, 999999), 6);
        cr_assert_eq(histogram_count_le(h, 1000000), 7);
}
