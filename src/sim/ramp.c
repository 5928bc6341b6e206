/* SPDX-License-Identifier: MIT */
#include <math.h>

#include "basic/macro.h"
#include "basic/string-table.h"
#include "sim/ramp.h"

static const char *const ramp_profile_table[_RAMP_PROFILE_MAX] = {
        [RAMP_LINEAR] = "linear",
        [RAMP_STEPS] = "steps",
        [RAMP_POISSON] = "poisson",
};
DEFINE_STRING_TABLE_LOOKUP(ramp_profile, RampProfile);

static uint64_t slot_usec(Ramp *r, size_t i) {
        switch (r->profile) {
        case RAMP_STEPS:
                return r->start_usec + (uint64_t) (i / r->step_size) * r->step_usec;
        case RAMP_POISSON: {
                /* the first at start; then gaps of -ln(U) / rate, U in (0, 1] */
                if (i == 0)
                        return r->last_due_usec = r->start_usec;
                double u = r->rng ? 1.0 - rng_double(r->rng) : 0.5;
                r->last_due_usec += (uint64_t) (-log(u) / r->rate * 1e6);
                return r->last_due_usec;
        }
        case RAMP_LINEAR:
        case _RAMP_PROFILE_MAX:
        case _RAMP_PROFILE_INVALID:
                break;
        }
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

void ramp_set_steps(Ramp *r, size_t step_size, uint64_t step_usec) {
        r->profile = RAMP_STEPS;
        r->step_size = MAX(step_size, (size_t) 1);
        r->step_usec = step_usec;
        r->next_due_usec = r->total > r->next ? slot_usec(r, r->next) : UINT64_MAX;
}

void ramp_set_poisson(Ramp *r) {
        r->profile = RAMP_POISSON;
        r->next_due_usec = r->total > r->next ? slot_usec(r, r->next) : UINT64_MAX;
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
        if (rate <= 0 || ramp_done(r) || r->profile == RAMP_STEPS)
                return;
        if (r->profile == RAMP_POISSON) { /* from now on at the new rate */
                r->rate = rate;
                return;
        }
        /* slot i of the new ramp = (i - next) / rate after now */
        r->rate = rate;
        r->start_usec = now > (uint64_t) ((double) r->next / rate * 1e6) ? now - (uint64_t) ((double) r->next / rate * 1e6) : 0;
        r->next_due_usec = MAX(slot_usec(r, r->next), now);
}
