/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

#include "sim/backoff.h"

Test(backoff, growth_and_cap) {
        Backoff b;
        backoff_init(&b, 100, 1000, 0);
        cr_assert_eq(backoff_next_ms(&b, 0.5), 100);
        cr_assert_eq(backoff_next_ms(&b, 0.5), 200);
        cr_assert_eq(backoff_next_ms(&b, 0.5), 400);
        cr_assert_eq(backoff_next_ms(&b, 0.5), 800);
        cr_assert_eq(backoff_next_ms(&b, 0.5), 1000);
        for (int i = 0; i < 100; i++)
                cr_assert_eq(backoff_next_ms(&b, 0.5), 1000);
        backoff_reset(&b);
        cr_assert_eq(backoff_next_ms(&b, 0.5), 100);
}

Test(backoff, jitter_range) {
        Backoff b;
        Rng r;
        rng_seed(&r, 12345);
        backoff_init(&b, 1000, 8000, 0.5);

        /* attempt 0: [500, 1000] */
        cr_assert_eq(backoff_next_ms(&b, 0.0), 1000);
        b.attempt = 0;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
                b.attempt = 3; /* base 8000 */
                uint64_t d = backoff_next_ms(&b, rng_double(&r));
                cr_assert(d >= 4000 && d <= 8000, "%llu", (unsigned long long) d);
                lo = d < lo ? d : lo;
                hi = d > hi ? d : hi;
        }
        /* the draw really spreads over the window */
        cr_assert_lt(lo, 4500);
        cr_assert_gt(hi, 7500);
        /* u out of [0,1) is clamped */
        b.attempt = 0;
        uint64_t d = backoff_next_ms(&b, 5.0);
        cr_assert(d >= 500 && d <= 1000);
}

Test(backoff, bad_init) {
        Backoff b;
        backoff_init(&b, 0, 0, 3);
        cr_assert_eq(b.min_ms, 1);
        cr_assert_eq(b.max_ms, 1);
        cr_assert_float_eq(b.jitter, 1.0, 1e-12);
}

Test(backoff, rng_range) {
        Rng r;
        rng_seed(&r, 0);
        for (int i = 0; i < 10000; i++) {
                double u = rng_double(&r);
                cr_assert(u >= 0 && u < 1);
        }
}

Test(backoff, token_bucket) {
        TokenBucket t;
        uint64_t now = 1000000;

        token_bucket_init(&t, 10, 3, now); /* 10/s, burst 3 */
        cr_assert_eq(token_bucket_take(&t, now), 0);
        cr_assert_eq(token_bucket_take(&t, now), 0);
        cr_assert_eq(token_bucket_take(&t, now), 0);
        uint64_t wait = token_bucket_take(&t, now);
        cr_assert(wait > 0 && wait <= 100001, "%llu", (unsigned long long) wait);
        /* still empty just before the wait is over, a token right after */
        cr_assert_gt(token_bucket_take(&t, now + wait - 2), 0);
        cr_assert_eq(token_bucket_take(&t, now + wait), 0);

        /* over 10 s at most burst + rate * 10 tokens */
        token_bucket_init(&t, 10, 3, 0);
        unsigned taken = 0;
        for (uint64_t us = 0; us <= 10000000; us += 1000)
                while (token_bucket_take(&t, us) == 0)
                        taken++;
        cr_assert(taken >= 100 && taken <= 103, "%u", taken);

        /* a long idle time refills only up to the burst */
        token_bucket_init(&t, 10, 3, 0);
        for (int i = 0; i < 3; i++)
                token_bucket_take(&t, 0);
        unsigned n = 0;
        while (token_bucket_take(&t, 3600000000ull) == 0)
                n++;
        cr_assert_eq(n, 3);

        /* time going backwards does not mint tokens */
        token_bucket_init(&t, 1, 1, 5000000);
        cr_assert_eq(token_bucket_take(&t, 5000000), 0);
        cr_assert_gt(token_bucket_take(&t, 1000000), 0);
}

Test(backoff, token_bucket_reserve_spaces_slots) {
        TokenBucket t;
        token_bucket_init(&t, 100, 2, 0); /* 100/s, burst 2 */

        cr_assert_eq(token_bucket_reserve(&t, 0), 0);
        cr_assert_eq(token_bucket_reserve(&t, 0), 0);
        /* 1000 devices asking at the same instant get slots 10 ms apart */
        uint64_t prev = 0;
        for (int i = 1; i <= 1000; i++) {
                uint64_t w = token_bucket_reserve(&t, 0);
                cr_assert(w >= (uint64_t) i * 10000 && w <= (uint64_t) i * 10000 + 2, "slot %d: %llu", i,
                          (unsigned long long) w);
                cr_assert_gt(w, prev);
                prev = w;
        }
        /* after the backlog has drained, a request is served at once again */
        token_bucket_init(&t, 100, 1, 0);
        token_bucket_reserve(&t, 0);
        cr_assert_gt(token_bucket_reserve(&t, 0), 0);
        cr_assert_eq(token_bucket_reserve(&t, 1000000), 0);
}
