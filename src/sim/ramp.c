/* SPDX-License-Identifier: MIT */
#include <math.h>

#include "basic/macro.h"
#include "sim/ramp.h"

static uint64_t slot_usec(const Ramp *r, size_t i) {
        double j = r->rng && r->jitter > 0 ? (rng_double(r->rng) - 0.5) * r->jitter : 0.0;
        double t = ((double) i + j) / r->rate;
        return r->start_usec + (uint64_t) (MAX(t, 0.0) * 1e6);
}

void ramp_init(Ramp *r, uint64_t start_usec, double rate, double jitter, size_t total, size_t batch_max, Rng *rng) {
        *r = (Ramp) {
                .start_usec = start_usec,
                .rate = rate > 0 ? rate : 1.0,
                .jitter = jitter,
                .total = total,
                .batch_max = MAX(batch_max, (size_t) 1),
                .rng = rng,
        };
        r->next_due_usec = total > 0 ? slot_usec(r, 0) : UINT64_MAX;
}

bool ramp_done(const Ramp *r) {
        return r->next >= r->total;
}

size_t ramp_take(Ramp *r, uint64_t now, uint64_t *ret_next_usec) {
        size_t n = 0;

        while (!ramp_done(r) && r->next_due_usec <= now && n < r->batch_max) {
                r->next++;
                n++;
                r->next_due_usec = ramp_done(r) ? UINT64_MAX : slot_usec(r, r->next);
        }
        if (ret_next_usec)
                *ret_next_usec = ramp_done(r) ? UINT64_MAX : MAX(r->next_due_usec, now);
        return n;
}

void ramp_set_rate(Ramp *r, double rate, uint64_t now) {
        if (rate <= 0 || ramp_done(r))
                return;
        /* slot i of the new ramp = (i - next) / rate after now */
        r->rate = rate;
        r->start_usec = now > (uint64_t) ((double) r->next / rate * 1e6) ? now - (uint64_t) ((double) r->next / rate * 1e6) : 0;
        r->next_due_usec = MAX(slot_usec(r, r->next), now);
}
