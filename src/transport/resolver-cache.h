/* SPDX-License-Identifier: MIT */
#pragma once

/* The broker's addresses as the last name resolution gave them, without any
 * I/O: which address the next connection uses, and when to ask again
 * (resolver.h does the asking, off the loop). Pure state, so the rules are
 * unit-tested with a fake clock:
 *   - connections use the first address of the answer (getaddrinfo's
 *     RFC 6724 order) until one to it fails; then the next one;
 *   - until the first answer there is no address, and a query is due now;
 *   - an answer is kept for `ttl`; after that a refresh is due, and the old
 *     addresses stay in use until the new answer arrives;
 *   - a failed connection asks for a refresh, at most once per `min_interval`
 *     (a broker that is down must not turn every retry into a lookup);
 *   - a failed lookup keeps the addresses it had, and the next try is due
 *     after `min_interval`. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RESOLVER_ADDR_MAX 8
#define RESOLVER_ADDR_LEN 46    /* INET6_ADDRSTRLEN */

typedef struct ResolverCache {
        char addr[RESOLVER_ADDR_MAX][RESOLVER_ADDR_LEN];
        size_t n;
        size_t cur;                     /* the address in use */
        uint64_t ttl_usec, min_interval_usec;
        uint64_t resolved_usec;         /* time of the last answer (0: none yet) */
        uint64_t last_query_usec;       /* time the last query started (0: never) */
        bool refresh_requested;         /* a failed connection asked for one */
        bool in_flight;
        unsigned generation;            /* bumped whenever the address list changes */
} ResolverCache;

void resolver_cache_init(ResolverCache *c, uint64_t ttl_usec, uint64_t min_interval_usec);

/* The address for the next connection, or NULL while none is known. The
 * pointer stays valid (its text may change with a new answer). */
const char *resolver_cache_next(ResolverCache *c);
size_t resolver_cache_size(const ResolverCache *c);

/* Whether a query should start at `now`; if so, the caller starts it and
 * calls resolver_cache_query_started(). */
bool resolver_cache_query_due(const ResolverCache *c, uint64_t now);
/* Microseconds from `now` until a query is due (0 = now, UINT64_MAX = never
 * while one is in flight). */
uint64_t resolver_cache_due_in(const ResolverCache *c, uint64_t now);
void resolver_cache_query_started(ResolverCache *c, uint64_t now);

/* The answer: `n` numeric addresses (n = 0 or ok = false: the lookup failed). */
void resolver_cache_answer(ResolverCache *c, uint64_t now, bool ok, const char *const *addrs, size_t n);

/* A connection to `addr` (as resolver_cache_next() gave it; NULL: unknown)
 * failed (refused, timed out, unreachable): later connections move on to
 * the next address if it was the one in use, and a refresh is due. */
void resolver_cache_connect_failed(ResolverCache *c, const char *addr);
