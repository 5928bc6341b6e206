/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_MQTT

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "transport/resolver.h"

struct Resolver {
        sd_event *event;
        char *host;
        bool numeric;
        ResolverCache cache;
        resolver_changed_t changed;
        void *userdata;

        sd_event_source *timer;         /* next query due, or polling the one in flight */
        struct gaicb gai;
        struct addrinfo hints;
        struct gaicb *gai_list[1];
        const char *last_error;
};

static uint64_t now_usec(Resolver *r) {
        uint64_t t = 0;
        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void resolver_schedule(Resolver *r);

static void resolver_collect(Resolver *r) {
        const char *addrs[RESOLVER_ADDR_MAX];
        char buf[RESOLVER_ADDR_MAX][RESOLVER_ADDR_LEN];
        unsigned gen = r->cache.generation;
        size_t n = 0;
        int e = gai_error(&r->gai);

        if (e == EAI_INPROGRESS)
                return;
        if (e == 0) {
                for (struct addrinfo *ai = r->gai.ar_result; ai && n < RESOLVER_ADDR_MAX; ai = ai->ai_next) {
                        const void *src;
                        if (ai->ai_family == AF_INET)
                                src = &((struct sockaddr_in *) ai->ai_addr)->sin_addr;
                        else if (ai->ai_family == AF_INET6)
                                src = &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;
                        else
                                continue;
                        if (!inet_ntop(ai->ai_family, src, buf[n], sizeof buf[n]))
                                continue;
                        bool dup = false;
                        for (size_t i = 0; i < n; i++)
                                dup = dup || streq(buf[i], buf[n]);
                        if (!dup) {
                                addrs[n] = buf[n];
                                n++;
                        }
                }
                r->last_error = NULL;
        } else
                r->last_error = gai_strerror(e);
        if (r->gai.ar_result)
                freeaddrinfo(r->gai.ar_result);
        r->gai.ar_result = NULL;

        if (n == 0 && !r->last_error)
                r->last_error = "no IPv4 or IPv6 address";
        resolver_cache_answer(&r->cache, now_usec(r), n > 0, addrs, n);
        if (r->last_error)
                log_warning("Cannot resolve the broker '%s': %s%s", r->host, r->last_error,
                            r->cache.n > 0 ? ", keeping the addresses resolved before" : ", retrying");
        else
                log_debug("Broker '%s' resolves to %zu address(es), first %s", r->host, r->cache.n, r->cache.addr[0]);
        if (r->cache.generation != gen && r->changed)
                r->changed(r, r->userdata);
}

static void resolver_start_query(Resolver *r) {
        r->hints = (struct addrinfo) { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        r->gai = (struct gaicb) { .ar_name = r->host, .ar_request = &r->hints };
        r->gai_list[0] = &r->gai;
        struct sigevent sev = { .sigev_notify = SIGEV_NONE };
        int e = getaddrinfo_a(GAI_NOWAIT, r->gai_list, 1, &sev);
        resolver_cache_query_started(&r->cache, now_usec(r));
        if (e != 0) {
                /* could not even queue it: an answer that failed */
                r->last_error = gai_strerror(e);
                resolver_cache_answer(&r->cache, now_usec(r), false, NULL, 0);
                log_warning("Cannot resolve the broker '%s': %s, retrying", r->host, r->last_error);
        }
}

static int resolver_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Resolver *r = userdata;

        if (r->cache.in_flight)
                resolver_collect(r);
        else if (resolver_cache_query_due(&r->cache, now_usec(r)))
                resolver_start_query(r);
        resolver_schedule(r);
        return 0;
}

static void resolver_schedule(Resolver *r) {
        uint64_t in;

        if (r->numeric)
                return;
        in = r->cache.in_flight ? RESOLVER_POLL_MS * 1000ULL : resolver_cache_due_in(&r->cache, now_usec(r));
        if (!r->timer) {
                if (sd_event_add_time_relative(r->event, &r->timer, CLOCK_MONOTONIC, in, 1000, resolver_timer, r) < 0)
                        return;
                (void) sd_event_source_set_description(r->timer, "resolver");
        } else
                (void) sd_event_source_set_time_relative(r->timer, in);
        (void) sd_event_source_set_enabled(r->timer, SD_EVENT_ONESHOT);
}

int resolver_new(sd_event *e, const char *host, resolver_changed_t changed, void *userdata, Resolver **ret) {
        unsigned char ip[sizeof(struct in6_addr)];
        Resolver *r;

        if (!e || !host || !*host || !ret)
                return -EINVAL;
        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->event = sd_event_ref(e);
        r->host = strdup(host);
        if (!r->host) {
                resolver_free(r);
                return -ENOMEM;
        }
        r->changed = changed;
        r->userdata = userdata;
        resolver_cache_init(&r->cache, RESOLVER_TTL_USEC, RESOLVER_MIN_INTERVAL_USEC);
        if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
                const char *a[] = { host };
                r->numeric = true;
                resolver_cache_answer(&r->cache, 1, true, a, 1);
        } else
                resolver_schedule(r); /* the first query, now */
        *ret = r;
        return 0;
}

Resolver *resolver_free(Resolver *r) {
        if (!r)
                return NULL;
        r->timer = sd_event_source_disable_unref(r->timer);
        if (r->cache.in_flight) {
                /* glibc cannot cancel a running lookup: wait for it, or
                 * its thread would write into freed memory. */
                if (gai_cancel(&r->gai) != EAI_CANCELED) {
                        const struct gaicb *l[1] = { &r->gai };
                        while (gai_error(&r->gai) == EAI_INPROGRESS)
                                (void) gai_suspend(l, 1, NULL);
                }
                if (gai_error(&r->gai) == 0 && r->gai.ar_result)
                        freeaddrinfo(r->gai.ar_result);
        }
        free(r->host);
        sd_event_unref(r->event);
        free(r);
        return NULL;
}

const char *resolver_next_address(Resolver *r) {
        return r ? resolver_cache_next(&r->cache) : NULL;
}

size_t resolver_n_addresses(const Resolver *r) {
        return r ? resolver_cache_size(&r->cache) : 0;
}

void resolver_connect_failed(Resolver *r, const char *addr) {
        if (!r || r->numeric)
                return;
        resolver_cache_connect_failed(&r->cache, addr);
        if (!r->cache.in_flight)
                resolver_schedule(r);
}

const char *resolver_last_error(const Resolver *r) {
        return r ? r->last_error : NULL;
}
