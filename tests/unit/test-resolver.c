/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <systemd/sd-event.h>

#include "transport/resolver-cache.h"
#include "transport/resolver.h"

#define S 1000000ULL

static const char *const A1[] = { "127.0.0.1" };
static const char *const A2[] = { "127.0.0.2", "::1" };

Test(resolver_cache, first_query_due_at_once_then_ttl) {
        ResolverCache c;

        resolver_cache_init(&c, 300 * S, 5 * S);
        cr_assert_null(resolver_cache_next(&c));
        cr_assert(resolver_cache_query_due(&c, 10 * S));
        resolver_cache_query_started(&c, 10 * S);
        cr_assert_not(resolver_cache_query_due(&c, 10 * S), "one query at a time");
        cr_assert_eq(resolver_cache_due_in(&c, 11 * S), UINT64_MAX);
        resolver_cache_answer(&c, 11 * S, true, A2, 2);
        cr_assert_eq(c.generation, 1);
        cr_assert_str_eq(resolver_cache_next(&c), "127.0.0.2");
        cr_assert_str_eq(resolver_cache_next(&c), "127.0.0.2", "the first address until it fails");
        /* valid for the TTL from the answer */
        cr_assert_not(resolver_cache_query_due(&c, 310 * S));
        cr_assert_eq(resolver_cache_due_in(&c, 310 * S), 1 * S);
        cr_assert(resolver_cache_query_due(&c, 311 * S));
        /* the refresh brings the same list: no change, addresses kept throughout */
        resolver_cache_query_started(&c, 311 * S);
        cr_assert_not_null(resolver_cache_next(&c));
        resolver_cache_answer(&c, 312 * S, true, A2, 2);
        cr_assert_eq(c.generation, 1);
}

Test(resolver_cache, failover_to_the_next_address) {
        ResolverCache c;

        resolver_cache_init(&c, 300 * S, 5 * S);
        resolver_cache_query_started(&c, 1 * S);
        resolver_cache_answer(&c, 1 * S, true, A2, 2);
        const char *a = resolver_cache_next(&c);
        cr_assert_str_eq(a, "127.0.0.2");
        /* a failure of an address no longer in use moves nothing */
        resolver_cache_connect_failed(&c, "elsewhere");
        cr_assert_str_eq(resolver_cache_next(&c), "127.0.0.2");
        /* many devices failing on the same address move on once */
        resolver_cache_connect_failed(&c, a);
        const char *b = resolver_cache_next(&c);
        cr_assert_str_eq(b, "::1");
        resolver_cache_connect_failed(&c, a);
        cr_assert_str_eq(resolver_cache_next(&c), "::1");
        resolver_cache_connect_failed(&c, b);
        cr_assert_str_eq(resolver_cache_next(&c), "127.0.0.2", "and around");
        cr_assert(c.refresh_requested);
}

Test(resolver_cache, failed_connections_refresh_at_most_once_per_interval) {
        ResolverCache c;

        resolver_cache_init(&c, 300 * S, 5 * S);
        resolver_cache_query_started(&c, 1 * S);
        resolver_cache_answer(&c, 1 * S, true, A1, 1);
        /* a burst of failures right after the answer: the refresh waits for the interval */
        for (int i = 0; i < 1000; i++)
                resolver_cache_connect_failed(&c, resolver_cache_next(&c));
        cr_assert_not(resolver_cache_query_due(&c, 3 * S));
        cr_assert_eq(resolver_cache_due_in(&c, 3 * S), 3 * S);
        cr_assert(resolver_cache_query_due(&c, 6 * S));
        resolver_cache_query_started(&c, 6 * S);
        resolver_cache_answer(&c, 6 * S, true, A2, 2);
        cr_assert_eq(c.generation, 2, "a changed list is new");
        cr_assert_str_eq(resolver_cache_next(&c), "127.0.0.2");
        /* no failure since: back to the TTL */
        cr_assert_eq(resolver_cache_due_in(&c, 7 * S), 299 * S);
}

Test(resolver_cache, failed_lookup_keeps_stale_addresses) {
        ResolverCache c;

        resolver_cache_init(&c, 300 * S, 5 * S);
        /* never resolved, lookup fails: retried after the interval, still nothing */
        resolver_cache_query_started(&c, 1 * S);
        resolver_cache_answer(&c, 2 * S, false, NULL, 0);
        cr_assert_null(resolver_cache_next(&c));
        cr_assert_eq(resolver_cache_due_in(&c, 2 * S), 4 * S);
        /* resolved, then the refresh fails: the old address stays in use */
        resolver_cache_query_started(&c, 6 * S);
        resolver_cache_answer(&c, 6 * S, true, A1, 1);
        resolver_cache_connect_failed(&c, resolver_cache_next(&c));
        resolver_cache_query_started(&c, 11 * S);
        resolver_cache_answer(&c, 11 * S, false, NULL, 0);
        cr_assert_str_eq(resolver_cache_next(&c), "127.0.0.1");
        cr_assert_eq(resolver_cache_size(&c), 1);
}

Test(resolver_cache, long_lists_are_capped) {
        ResolverCache c;
        const char *many[RESOLVER_ADDR_MAX + 4];

        for (size_t i = 0; i < RESOLVER_ADDR_MAX + 4; i++)
                many[i] = "10.0.0.1";
        resolver_cache_init(&c, 300 * S, 5 * S);
        resolver_cache_query_started(&c, 1);
        resolver_cache_answer(&c, 1, true, many, RESOLVER_ADDR_MAX + 4);
        cr_assert_eq(resolver_cache_size(&c), RESOLVER_ADDR_MAX);
}

typedef struct Seen {
        sd_event *e;
        unsigned changes;
} Seen;

static void on_changed(Resolver *r, void *userdata) {
        Seen *s = userdata;
        s->changes++;
        (void) sd_event_exit(s->e, 0);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), -ETIMEDOUT);
}

/* Ends the loop once the lookup has failed (or after 30 s). */
static int on_poll_error(sd_event_source *s, uint64_t usec, void *userdata) {
        Resolver **r = userdata;
        if (*r && resolver_last_error(*r))
                return sd_event_exit(sd_event_source_get_event(s), 0);
        (void) sd_event_source_set_time(s, usec + 50000);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

Test(resolver, numeric_host_needs_no_lookup) {
        sd_event *e = NULL;
        Resolver *r = NULL;
        Seen seen = {};

        cr_assert_eq(sd_event_new(&e), 0);
        seen.e = e;
        cr_assert_eq(resolver_new(e, "::1", on_changed, &seen, &r), 0);
        cr_assert_eq(resolver_n_addresses(r), 1);
        cr_assert_str_eq(resolver_next_address(r), "::1");
        resolver_connect_failed(r, resolver_next_address(r)); /* nothing to refresh */
        cr_assert_str_eq(resolver_next_address(r), "::1");
        resolver_free(r);
        sd_event_unref(e);
}

Test(resolver, localhost_resolves_off_the_loop) {
        sd_event *e = NULL;
        Resolver *r = NULL;
        Seen seen = {};

        cr_assert_eq(sd_event_new(&e), 0);
        seen.e = e;
        cr_assert_eq(resolver_new(e, "localhost", on_changed, &seen, &r), 0);
        cr_assert_eq(resolver_n_addresses(r), 0, "nothing known before the loop ran");
        cr_assert_null(resolver_next_address(r));
        cr_assert_geq(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, 10 * S, 0, on_timeout, NULL), 0);
        cr_assert_eq(sd_event_loop(e), 0, "resolved before the 10 s timeout");
        cr_assert_eq(seen.changes, 1);
        cr_assert_geq(resolver_n_addresses(r), 1);
        const char *a = resolver_next_address(r);
        cr_assert(a && (strcmp(a, "127.0.0.1") == 0 || strcmp(a, "::1") == 0), "localhost is %s", a);
        resolver_free(r);
        sd_event_unref(e);
}

Test(resolver, unknown_name_reports_an_error_and_no_address) {
        sd_event *e = NULL;
        Resolver *r = NULL;
        Seen seen = {};

        cr_assert_eq(sd_event_new(&e), 0);
        seen.e = e;
        /* .invalid never resolves (RFC 2606); with no network it fails fast */
        cr_assert_eq(resolver_new(e, "espfleet-test.invalid", on_changed, &seen, &r), 0);
        cr_assert_geq(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, 30 * S, 0, on_timeout, NULL), 0);
        cr_assert_geq(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, 50000, 0, on_poll_error, &r), 0);
        cr_assert_eq(sd_event_loop(e), 0, "the lookup failed within 30 s");
        cr_assert_eq(seen.changes, 0);
        cr_assert_eq(resolver_n_addresses(r), 0);
        cr_assert_not_null(resolver_last_error(r));
        resolver_free(r);
        sd_event_unref(e);
}
