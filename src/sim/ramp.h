/* SPDX-License-Identifier: MIT */
#pragma once

/* The start ramp of a worker's devices (issue #16 §5), as pure arithmetic:
 * device i is due at start + (i + j_i) / rate, j_i a jitter in
 * [-jitter/2, +jitter/2) of a slot. A loop that fell behind catches up in
 * batches of at most `batch_max` devices per dispatch, so keepalives, the
 * handshakes in flight and the watchdog run between two batches. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/backoff.h"

/* How the devices' start times are spread (scenario.ramp). */
typedef enum RampProfile {
        RAMP_LINEAR,            /* device i at (i + jitter) / rate */
        RAMP_STEPS,             /* step_size devices at once, every step_interval */
        RAMP_POISSON,           /* exponential gaps of mean 1 / rate (random arrivals) */
        _RAMP_PROFILE_MAX,
        _RAMP_PROFILE_INVALID = -EINVAL,
} RampProfile;

const char *ramp_profile_to_string(RampProfile p);
RampProfile ramp_profile_from_string(const char *s);

typedef struct Ramp {
        RampProfile profile;
        size_t step_size;       /* RAMP_STEPS: devices per step (>= 1) */
        uint64_t step_usec;     /* RAMP_STEPS: time between two steps */
        uint64_t last_due_usec; /* RAMP_POISSON: the previous arrival */
        uint64_t start_usec;
        double rate;            /* devices per second (> 0) */
        double jitter;          /* 0..1 */
        size_t total;
        size_t next;            /* first device not started yet */
        size_t batch_max;       /* most devices started in one dispatch (>= 1) */
        uint64_t next_due_usec; /* slot time of `next` (drawn once) */
        Rng *rng;               /* NULL: no jitter */
} Ramp;

void ramp_init(Ramp *r, uint64_t start_usec, double rate, double jitter, size_t total, size_t batch_max, Rng *rng);
/* Switches a fresh ramp to another profile (before the first ramp_take()). */
void ramp_set_steps(Ramp *r, size_t step_size, uint64_t step_usec);
void ramp_set_poisson(Ramp *r);

/* How many devices (from r->next on) to start at `now`, and advances
 * r->next by that many. *ret_next_usec: when to come back (now when more are
 * already due: the next batch; UINT64_MAX when the ramp is done). */
size_t ramp_take(Ramp *r, uint64_t now, uint64_t *ret_next_usec);
bool ramp_done(const Ramp *r);
/* A new rate from now on (SIGHUP): the devices not started yet are spread
 * at the new rate from `now`. */
void ramp_set_rate(Ramp *r, double rate, uint64_t now);
