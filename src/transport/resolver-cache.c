/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "basic/macro.h"
#include "transport/resolver-cache.h"

void resolver_cache_init(ResolverCache *c, uint64_t ttl_usec, uint64_t min_interval_usec) {
        *c = (ResolverCache) {
                .ttl_usec = ttl_usec,
                .min_interval_usec = min_interval_usec,
        };
}

const char *resolver_cache_next(ResolverCache *c) {
        if (c->n == 0)
                return NULL;
        return c->addr[c->cur % c->n];
}

size_t resolver_cache_size(const ResolverCache *c) {
        return c->n;
}

uint64_t resolver_cache_due_in(const ResolverCache *c, uint64_t now) {
        uint64_t at;

        if (c->in_flight)
                return UINT64_MAX;
        if (c->last_query_usec == 0)
                return 0;
        /* never more often than min_interval */
        uint64_t earliest = c->last_query_usec + c->min_interval_usec;
        if (c->n == 0 || c->refresh_requested)
                at = earliest;
        else
                at = MAX(c->resolved_usec + c->ttl_usec, earliest);
        return at > now ? at - now : 0;
}

bool resolver_cache_query_due(const ResolverCache *c, uint64_t now) {
        return resolver_cache_due_in(c, now) == 0;
}

void resolver_cache_query_started(ResolverCache *c, uint64_t now) {
        c->in_flight = true;
        c->last_query_usec = MAX(now, (uint64_t) 1);
        c->refresh_requested = false;
}

static bool same_list(const ResolverCache *c, const char *const *addrs, size_t n) {
        if (n != c->n)
                return false;
        for (size_t i = 0; i < n; i++)
                if (strcmp(c->addr[i], addrs[i]) != 0)
                        return false;
        return true;
}

void resolver_cache_answer(ResolverCache *c, uint64_t now, bool ok, const char *const *addrs, size_t n) {
        c->in_flight = false;
        if (!ok || n == 0)
                return; /* keep what we had; retried after min_interval */
        c->resolved_usec = MAX(now, (uint64_t) 1);
        n = MIN(n, (size_t) RESOLVER_ADDR_MAX);
        if (same_list(c, addrs, n))
                return;
        for (size_t i = 0; i < n; i++) {
                strncpy(c->addr[i], addrs[i], RESOLVER_ADDR_LEN - 1);
                c->addr[i][RESOLVER_ADDR_LEN - 1] = 0;
        }
        c->n = n;
        c->cur = 0;
        c->generation++;
}

void resolver_cache_connect_failed(ResolverCache *c, const char *addr) {
        c->refresh_requested = true;
        if (c->n > 1 && addr == c->addr[c->cur % c->n])
                c->cur = (c->cur + 1) % c->n;
}
