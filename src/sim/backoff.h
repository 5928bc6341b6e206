/* SPDX-License-Identifier: MIT */
#pragma once

/* Reconnect pacing: exponential backoff with jitter per device, and a token
 * bucket that caps connection attempts per second across the fleet (each of
 * N workers gets rate/N). Pure: the caller passes the time and the random
 * draw, so tests need no clock. */

#include <stdbool.h>
#include <stdint.h>

typedef struct Backoff {
        unsigned min_ms;
        unsigned max_ms;
        double jitter;          /* 0..1 */
        unsigned attempt;       /* failed attempts since the last success */
} Backoff;

void backoff_init(Backoff *b, unsigned min_ms, unsigned max_ms, double jitter);
/* The delay before the next attempt, and counts the attempt. base =
 * min_ms * 2^attempt capped at max_ms; the result is in
 * [base * (1 - jitter), base], at base * (1 - jitter * u) for u in [0, 1). */
uint64_t backoff_next_ms(Backoff *b, double u);
void backoff_reset(Backoff *b);

typedef struct TokenBucket {
        double rate;            /* tokens per second */
        double burst;           /* bucket size */
        double tokens;
        uint64_t last_usec;
} TokenBucket;

/* Starts full (`burst` tokens). burst >= 1. */
void token_bucket_init(TokenBucket *t, double rate, double burst, uint64_t now_usec);
void token_bucket_set_rate(TokenBucket *t, double rate, double burst, uint64_t now_usec);
/* Takes one token: returns 0 when one was available, else the microseconds
 * until one will be (nothing is taken then). */
uint64_t token_bucket_take(TokenBucket *t, uint64_t now_usec);

/* Reserves the next token even when none is left yet (the bucket goes
 * negative): returns 0 when it is usable now, else the microseconds until
 * it is. Callers that each reserve get distinct, evenly spaced slots, so a
 * thousand devices waiting after a broker restart do not wake together. */
uint64_t token_bucket_reserve(TokenBucket *t, uint64_t now_usec);

/* xorshift64* for jitter: fast, per worker, seeded from getrandom(). */
typedef struct Rng {
        uint64_t s;
} Rng;
void rng_seed(Rng *r, uint64_t seed);
double rng_double(Rng *r);      /* [0, 1) */
