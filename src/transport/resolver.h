/* SPDX-License-Identifier: MIT */
#pragma once

/* The broker's name, resolved off the loop and cached (issue #16 §5).
 * glibc's getaddrinfo_a() runs the lookup; the loop only polls its result
 * every RESOLVER_POLL_MS while one is in flight, so no connection attempt
 * ever waits on DNS. The rules (TTL, refresh after a failed connection, at
 * most one query per minimum interval, stale addresses kept on a failed
 * lookup) are resolver-cache.h's. A numeric host is taken as it is. */

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "transport/resolver-cache.h"

#define RESOLVER_POLL_MS 10
#define RESOLVER_TTL_USEC (300 * 1000000ULL)
#define RESOLVER_MIN_INTERVAL_USEC (5 * 1000000ULL)

typedef struct Resolver Resolver;

/* Called whenever the address list changes (the first answer included). */
typedef void (*resolver_changed_t)(Resolver *r, void *userdata);

int resolver_new(sd_event *e, const char *host, resolver_changed_t changed, void *userdata, Resolver **ret);
Resolver *resolver_free(Resolver *r);

/* A numeric address for the next connection, or NULL while none is known
 * yet (resolver-cache.h: the first one until a connection to it fails). */
const char *resolver_next_address(Resolver *r);
/* How many addresses are known. */
size_t resolver_n_addresses(const Resolver *r);
/* A connection to `addr` (from resolver_next_address()) failed: the next
 * address is tried, and the name is looked up again (rate-limited). */
void resolver_connect_failed(Resolver *r, const char *addr);
/* The last lookup error (EAI_* as a string), or NULL. */
const char *resolver_last_error(const Resolver *r);
