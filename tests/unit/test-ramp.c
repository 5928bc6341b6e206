/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>

#include "sim/fd-budget.h"
#include "sim/ramp.h"

#define S 1000000ULL

Test(ramp, on_time_one_per_slot) {
        Ramp r;
        uint64_t next;

        /* 10 devices/s from t = 5 s: device i due at 5 s + i * 100 ms */
        ramp_init(&r, 5 * S, 10, 0, 5, 16, NULL);
        cr_assert_eq(r.next_due_usec, 5 * S);
        cr_assert_eq(ramp_take(&r, 4 * S, &next), 0);
        cr_assert_eq(next, 5 * S);
        cr_assert_eq(ramp_take(&r, 5 * S, &next), 1);
        cr_assert_eq(next, 5 * S + 100000);
        cr_assert_eq(ramp_take(&r, 5 * S + 100000, &next), 1);
        cr_assert_eq(ramp_take(&r, 5 * S + 250000, &next), 1);
        cr_assert_eq(next, 5 * S + 300000);
        cr_assert_not(ramp_done(&r));
        cr_assert_eq(ramp_take(&r, 9 * S, &next), 2);
        cr_assert(ramp_done(&r));
        cr_assert_eq(next, UINT64_MAX);
        cr_assert_eq(ramp_take(&r, 10 * S, &next), 0);
}

Test(ramp, catch_up_is_bounded_per_dispatch) {
        Ramp r;
        uint64_t next;
        size_t total = 0, calls = 0;

        /* 1000 devices/s, but the loop comes back only after 10 s: everything
         * is due, and it is handed out 16 at a time, each next batch "now". */
        ramp_init(&r, 0, 1000, 0, 10000, 16, NULL);
        while (!ramp_done(&r)) {
                size_t n = ramp_take(&r, 10 * S, &next);
                cr_assert_leq(n, 16);
                cr_assert_geq(n, 1);
                if (!ramp_done(&r))
                        cr_assert_eq(next, 10 * S, "behind schedule: the next batch is due now");
                total += n;
                calls++;
        }
        cr_assert_eq(total, 10000);
        cr_assert_eq(calls, 625);
}

Test(ramp, jitter_stays_in_its_slot_and_keeps_order_of_magnitude) {
        Ramp r;
        Rng rng;
        uint64_t next, last = 0;

        rng_seed(&rng, 42);
        ramp_init(&r, 100 * S, 100, 1.0, 1000, 1, &rng);
        for (size_t i = 0; i < 1000; i++) {
                uint64_t due = r.next_due_usec;
                /* slot i is [i - 0.5, i + 0.5) / rate around start */
                cr_assert_geq(due + 5000, 100 * S + i * 10000);
                cr_assert_leq(due, 100 * S + i * 10000 + 5000);
                cr_assert_eq(ramp_take(&r, due, &next), 1);
                last = due;
        }
        cr_assert(ramp_done(&r));
        cr_assert_geq(last, 100 * S + 9 * S);
}

Test(ramp, new_rate_applies_to_the_rest) {
        Ramp r;
        uint64_t next;

        ramp_init(&r, 0, 1, 0, 100, 16, NULL);
        cr_assert_eq(ramp_take(&r, 9 * S + 1, &next), 10);   /* 0..9 due by 9 s */
        ramp_set_rate(&r, 100, 10 * S);                      /* the other 90 in 0.9 s from 10 s */
        cr_assert_eq(r.next_due_usec, 10 * S);
        size_t n = 0;
        while (ramp_take(&r, 11 * S, &next) > 0)
                n++;
        cr_assert(ramp_done(&r), "all started by 11 s, in %zu batches", n);
}

Test(fd_budget, devices_per_worker) {
        /* 20,000 fds: 64 reserved, 256 downloads of 2 fds, 1 fd per device */
        cr_assert_eq(fd_budget_devices(20000, 256), 20000 - 64 - 512);
        cr_assert_eq(fd_budget_devices(20000, 0), 20000 - 64);
        cr_assert_eq(fd_budget_devices(64, 0), 0);
        cr_assert_eq(fd_budget_devices(100, 100), 0);
        cr_assert_eq(fd_budget_needed(19424, 256), 20000);
        cr_assert_eq(fd_budget_needed(0, 0), FD_RESERVED_PER_WORKER);
}

Test(fd_budget, workers) {
        char err[256] = "";

        cr_assert_eq(fd_budget_workers(19500, 0, 0, 19424, err, sizeof err), 2);
        cr_assert_eq(fd_budget_workers(19424, 0, 0, 19424, err, sizeof err), 1);
        cr_assert_eq(fd_budget_workers(30000, 0, 0, 19424, err, sizeof err), 2);
        cr_assert_eq(fd_budget_workers(300, 0, 100, 19424, err, sizeof err), 3);
        cr_assert_eq(fd_budget_workers(301, 0, 100, 19424, err, sizeof err), 4);
        cr_assert_eq(fd_budget_workers(5, 8, 0, 19424, err, sizeof err), 5);     /* never more workers than devices */
        cr_assert_eq(fd_budget_workers(0, 0, 0, 19424, err, sizeof err), 1);
        cr_assert_eq(fd_budget_workers(40000, 2, 0, 19424, err, sizeof err), -ERANGE);
        cr_assert(strstr(err, "workers = 2 puts up to 20000 devices") && strstr(err, "at least 3"), "%s", err);
        cr_assert_eq(fd_budget_workers(10, 0, 0, 0, err, sizeof err), -ERANGE);
}

Test(ramp, steps_start_whole_steps_at_exact_times) {
        Ramp r;
        uint64_t next;

        /* 7 devices, 3 per step, a step every 2 s from t = 1 s */
        ramp_init(&r, 1 * S, 100, 0.5, 7, 16, NULL);
        ramp_set_steps(&r, 3, 2 * S);
        cr_assert_eq(r.next_due_usec, 1 * S);
        cr_assert_eq(ramp_take(&r, 1 * S, &next), 3);
        cr_assert_eq(next, 3 * S);
        cr_assert_eq(ramp_take(&r, 3 * S - 1, &next), 0);
        cr_assert_eq(ramp_take(&r, 3 * S, &next), 3);
        cr_assert_eq(next, 5 * S);
        cr_assert_eq(ramp_take(&r, 9 * S, &next), 1);
        cr_assert(ramp_done(&r));
        cr_assert_eq(next, UINT64_MAX);
}

/* Poisson arrivals: gaps are exponential with mean 1 / rate, so over many
 * arrivals the mean rate is close to the asked one, and the gaps vary (a
 * coefficient of variation near 1, where a metronome has 0). */
Test(ramp, poisson_mean_rate_and_spread) {
        const size_t n = 20000;
        const double rate = 50;

        for (uint64_t seed = 1; seed <= 3; seed++) {
                Rng rng;
                Ramp r;
                uint64_t next, prev = 0;
                double sum = 0, sum2 = 0;

                rng_seed(&rng, seed);
                ramp_init(&r, 0, rate, 0, n, 1, &rng);
                ramp_set_poisson(&r);
                cr_assert_eq(r.next_due_usec, 0);
                for (size_t i = 0; i < n; i++) {
                        uint64_t due = r.next_due_usec;
                        cr_assert_geq(due, prev, "arrivals out of order");
                        if (i > 0) {
                                double g = (double) (due - prev) / 1e6;
                                sum += g;
                                sum2 += g * g;
                        }
                        prev = due;
                        cr_assert_eq(ramp_take(&r, due, &next), 1);
                }
                cr_assert(ramp_done(&r));
                double mean = sum / (double) (n - 1);
                double sd = sqrt(sum2 / (double) (n - 1) - mean * mean);
                cr_assert_float_eq(1 / mean, rate, rate * 0.03, "seed %" PRIu64 ": mean rate %.2f", seed, 1 / mean);
                cr_assert_float_eq(sd / mean, 1.0, 0.05, "seed %" PRIu64 ": CV %.3f", seed, sd / mean);
        }
}

Test(ramp, profile_names) {
        cr_assert_eq(ramp_profile_from_string("steps"), RAMP_STEPS);
        cr_assert_eq(ramp_profile_from_string("poisson"), RAMP_POISSON);
        cr_assert_eq(ramp_profile_from_string("linear"), RAMP_LINEAR);
        cr_assert_lt(ramp_profile_from_string("zigzag"), 0);
        cr_assert_str_eq(ramp_profile_to_string(RAMP_STEPS), "steps");
}
