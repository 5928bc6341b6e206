/* SPDX-License-Identifier: MIT */
#include "basic/macro.h"
#include "sim/backoff.h"

void backoff_init(Backoff *b, unsigned min_ms, unsigned max_ms, double jitter) {
        *b = (Backoff) {
                .min_ms = MAX(min_ms, 1u),
                .max_ms = MAX(max_ms, MAX(min_ms, 1u)),
                .jitter = jitter < 0 ? 0 : jitter > 1 ? 1 : jitter,
        };
}

uint64_t backoff_next_ms(Backoff *b, double u) {
        uint64_t base = b->min_ms;

        for (unsigned i = 0; i < b->attempt && base < b->max_ms; i++)
                base *= 2;
        base = MIN(base, (uint64_t) b->max_ms);
        if (b->attempt < 64)
                b->attempt++;
        if (u < 0)
                u = 0;
        if (u >= 1)
                u = 0.999999;
        return base - (uint64_t) ((double) base * b->jitter * u);
}

void backoff_reset(Backoff *b) {
        b->attempt = 0;
}

void token_bucket_init(TokenBucket *t, double rate, double burst, uint64_t now_usec) {
        *t = (TokenBucket) {
                .rate = rate > 0 ? rate : 1,
                .burst = burst >= 1 ? burst : 1,
                .last_usec = now_usec,
        };
        t->tokens = t->burst;
}

void token_bucket_set_rate(TokenBucket *t, double rate, double burst, uint64_t now_usec) {
        t->rate = rate > 0 ? rate : 1;
        t->burst = burst >= 1 ? burst : 1;
        t->tokens = MIN(t->tokens, t->burst);
        t->last_usec = now_usec;
}

uint64_t token_bucket_take(TokenBucket *t, uint64_t now_usec) {
        if (now_usec > t->last_usec) {
                t->tokens += (double) (now_usec - t->last_usec) * t->rate / 1e6;
                if (t->tokens > t->burst)
                        t->tokens = t->burst;
        }
        t->last_usec = MAX(t->last_usec, now_usec);
        if (t->tokens >= 1) {
                t->tokens -= 1;
                return 0;
        }
        uint64_t wait = (uint64_t) ((1 - t->tokens) * 1e6 / t->rate) + 1;
        return wait;
}

uint64_t token_bucket_reserve(TokenBucket *t, uint64_t now_usec) {
        if (now_usec > t->last_usec) {
                t->tokens += (double) (now_usec - t->last_usec) * t->rate / 1e6;
                if (t->tokens > t->burst)
                        t->tokens = t->burst;
                t->last_usec = now_usec;
        }
        t->tokens -= 1;
        if (t->tokens >= 0)
                return 0;
        return (uint64_t) (-t->tokens * 1e6 / t->rate) + 1;
}

void rng_seed(Rng *r, uint64_t seed) {
        r->s = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

double rng_double(Rng *r) {
        uint64_t x = r->s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r->s = x;
        return (double) ((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}
