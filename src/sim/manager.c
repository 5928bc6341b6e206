/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <inttypes.h>
#include <openssl/x509.h>
#include <sys/random.h>
#include <time.h>

#include "basic/errmsg.h"
#include "basic/log.h"
#include "dsemu/ds-provider.h"
#include "ota/boot-cache.h"
#include "sim/device.h"
#include "sim/keystore.h"
#include "sim/manager.h"
#include "sim/ramp.h"
#include "transport/http.h"
#include "transport/mqtt.h"
#include "transport/resolver.h"

/* Devices started in one dispatch of the ramp timer when the loop is behind:
 * each costs a device load and a boot (~1 ms), so a batch stays in the low
 * milliseconds and the sockets, keepalives and reports run in between. */
#define RAMP_BATCH_MAX 16

/* A counted resource with a line of devices waiting for it, in arrival order. */
typedef struct Slots {
        unsigned active, max;
        Device **ring;
        size_t head, len, cap;
        bool granting;                  /* inside slots_release(): no recursion */
} Slots;

static bool slots_take(Slots *q, Device *d) {
        if (q->active < q->max) {
                q->active++;
                return true;
        }
        if (q->len == q->cap) {
                size_t cap = MAX(q->cap * 2, (size_t) 64);
                Device **n = calloc(cap, sizeof *n);
                if (!n)
                        return false; /* not queued: the caller retries on its own */
                for (size_t i = 0; i < q->len; i++)
                        n[i] = q->ring[(q->head + i) % q->cap];
                free(q->ring);
                q->ring = n;
                q->cap = cap;
                q->head = 0;
        }
        q->ring[(q->head + q->len++) % q->cap] = d;
        return false;
}

/* Gives a slot back and hands free slots to the first devices in line that
 * still want one (`grant` returns false for a device that no longer does). */
static void slots_release(Slots *q, bool (*grant)(Device *d), bool stopping) {
        if (q->active > 0)
                q->active--;
        /* A granted device may fail at once (a refused connect) and give its
         * slot back from inside grant(): the loop below goes on with the next
         * one instead of recursing once per device in line. */
        if (q->granting)
                return;
        q->granting = true;
        while (q->len > 0 && q->active < q->max && !stopping) {
                Device *next = q->ring[q->head];
                q->head = (q->head + 1) % q->cap;
                q->len--;
                (void) grant(next);
        }
        q->granting = false;
}

static void slots_done(Slots *q) {
        free(q->ring);
        q->ring = NULL;
}

struct Manager {
        sd_event *event;
        DaemonConfig config;            /* own copy, updated in place on reload */
        Fleet *fleet;                   /* not owned */
        MqttLoop *mqtt;
        X509_STORE *ca_store;           /* one for every device */
        DeviceBroker *brokers;          /* broker.hosts, or broker.host:port alone */
        size_t n_brokers;
        BootCache *boot_cache;          /* one image verified once per worker, not once per device */
        unsigned n_workers;
        size_t pos_first;               /* manifest position of devices[0] */
        MetricsBlock *metrics;          /* borrowed, or metrics_own */
        MetricsBlock *metrics_own;
        DeviceContext dctx;             /* what the devices see of us */

        Device **devices;
        size_t n_devices;
        size_t n_in_state[_DEVICE_STATE_MAX];

        sd_event_source *ramp_timer;
        sd_event_source *churn_timer;   /* scenario.churn */
        Ramp ramp;
        bool ramp_started;

        TokenBucket connect_bucket;     /* this worker's share of reconnect.connect_rate_max */
        Rng rng;
        size_t bind_next;               /* round-robin over broker.bind_addresses */

        HttpClient *http;               /* OTA downloads, created on first use */
        char *ca_path;                  /* FLEET/ca.crt */

        Slots ota_slots;                /* downloads (ota.max_concurrent) */
        Slots connect_slots;            /* connection attempts in flight (reconnect.connect_inflight_max) */

        bool stopping;
        void (*stop_done)(Manager *m, void *userdata);
        void *stop_userdata;
};

static uint64_t manager_now(Manager *m) {
        uint64_t t;

        if (sd_event_now(m->event, CLOCK_MONOTONIC, &t) < 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                t = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
        }
        return t;
}

static const char *next_bind_address(void *owner) {
        Manager *m = owner;
        char **b = m->config.bind_addresses;
        size_t n = 0;

        while (b && b[n])
                n++;
        if (n == 0)
                return NULL;
        return b[m->bind_next++ % n];
}

static HttpClient *manager_http(void *owner) {
        Manager *m = owner;
        int r;

        if (m->http)
                return m->http;
        r = http_client_new(m->event, &m->http);
        if (r < 0) {
                log_error_errno(r, "Cannot create the HTTPS client: %m");
                return NULL;
        }
        return m->http;
}

static void manager_check_stopped(Manager *m) {
        if (!m->stopping || !m->stop_done || m->n_in_state[DEVICE_OFF] < m->n_devices)
                return;
        void (*done)(Manager *, void *) = m->stop_done;
        m->stop_done = NULL;
        done(m, m->stop_userdata);
}

static void device_state_changed(void *owner, Device *d, DeviceState old, DeviceState s) {
        Manager *m = owner;

        if (old >= 0 && old < _DEVICE_STATE_MAX && m->n_in_state[old] > 0) {
                m->n_in_state[old]--;
                m->metrics->devices_in_state[old] = m->n_in_state[old];
        }
        if (s >= 0 && s < _DEVICE_STATE_MAX) {
                m->n_in_state[s]++;
                m->metrics->devices_in_state[s] = m->n_in_state[s];
        }
        if (s == DEVICE_OFF)
                manager_check_stopped(m);
}

/* ---- download slots (ota.max_concurrent) --------------------------------- */

static void ota_gauges(Manager *m) {
        m->metrics->downloads_active = m->ota_slots.active;
        m->metrics->downloads_queued = m->ota_slots.len;
}

static bool ota_slot_take(void *owner, Device *d) {
        Manager *m = owner;
        bool r = slots_take(&m->ota_slots, d);
        ota_gauges(m);
        return r;
}

static void ota_slot_release(void *owner, Device *d) {
        Manager *m = owner;
        slots_release(&m->ota_slots, device_ota_slot_granted, m->stopping);
        ota_gauges(m);
}

static bool connect_slot_take(void *owner, Device *d) {
        Manager *m = owner;
        return slots_take(&m->connect_slots, d);
}

static void connect_slot_release(void *owner, Device *d) {
        Manager *m = owner;
        slots_release(&m->connect_slots, device_connect_slot_granted, m->stopping);
}

/* ---- ramp ----------------------------------------------------------------- */

static void manager_rates(Manager *m) {
        double share = m->config.connect_rate_max / m->n_workers;
        token_bucket_set_rate(&m->connect_bucket, share, MAX(1.0, share / 10), manager_now(m));
        m->connect_slots.max = MAX(m->config.connect_inflight_max / m->n_workers, 1u);
        m->ota_slots.max = m->config.ota_max_concurrent;
}

static int ramp_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t next;

        if (m->stopping)
                return 0;
        /* At most RAMP_BATCH_MAX starts per dispatch, then back to the loop. */
        size_t first = m->ramp.next;
        size_t n = ramp_take(&m->ramp, manager_now(m), &next);
        /* `usec` is when the first of them was due: their latencies count from then */
        for (size_t i = 0; i < n; i++)
                device_start(m->devices[first + i], usec);
        if (ramp_done(&m->ramp)) {
                log_info("Ramp: all %zu devices started", m->n_devices);
                return 0;
        }
        (void) sd_event_source_set_time(s, next);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* scenario.churn: one random online device of this worker drops its
 * connection, at this worker's share of the fleet-wide rate. */
static int churn_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        double rate = m->config.churn_rate / m->n_workers;

        if (m->stopping)
                return 0;
        if (rate <= 0) {
                (void) sd_event_source_set_time(s, usec + 1000000); /* look again: SIGHUP may set one */
                return 0;
        }
        if (m->n_in_state[DEVICE_ONLINE] > 0)
                for (unsigned tries = 0; tries < 32; tries++) {
                        Device *d = m->devices[(size_t) (rng_double(&m->rng) * (double) m->n_devices) % m->n_devices];
                        if (device_get_state(d) == DEVICE_ONLINE) {
                                device_drop(d, METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_CHURN));
                                break;
                        }
                }
        /* from when this one was due: the rate holds even when the loop is late */
        (void) sd_event_source_set_time(s, usec + (uint64_t) (1e6 / rate));
        return 0;
}

static int manager_start_ramp(Manager *m) {
        int r;

        if (m->ramp_started || m->n_devices == 0 || m->stopping)
                return 0;
        m->ramp_started = true;
        ramp_init(&m->ramp, manager_now(m), m->config.ramp_rate / m->n_workers, m->config.ramp_jitter, m->n_devices,
                  RAMP_BATCH_MAX, &m->rng);
        switch (ramp_profile_from_string(m->config.ramp_profile)) {
        case RAMP_STEPS: {
                /* this worker's share of each fleet-wide step */
                size_t k = (m->config.ramp_step_size + m->n_workers - 1) / m->n_workers;
                ramp_set_steps(&m->ramp, k, (uint64_t) (m->config.ramp_step_interval_s * 1e6));
                break;
        }
        case RAMP_POISSON:
                ramp_set_poisson(&m->ramp);
                break;
        case RAMP_LINEAR:
        case _RAMP_PROFILE_MAX:
        case _RAMP_PROFILE_INVALID:
                break;
        }
        r = sd_event_add_time(m->event, &m->ramp_timer, CLOCK_MONOTONIC, m->ramp.next_due_usec, 1000, ramp_handler, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(m->ramp_timer, "ramp");
        return sd_event_source_set_enabled(m->ramp_timer, SD_EVENT_ONESHOT);
}

static void resolver_changed(Resolver *r, void *userdata) {
        Manager *m = userdata;
        int k;

        const char *host = "?";

        for (size_t i = 0; i < m->n_brokers; i++)
                if (m->brokers[i].resolver == r)
                        host = m->brokers[i].host;
        if (m->ramp_started) {
                log_debug("Broker %s resolved (%zu address(es))", host, resolver_n_addresses(r));
                return;
        }
        log_info("Broker %s resolved (%zu address(es)), starting the ramp", host, resolver_n_addresses(r));
        k = manager_start_ramp(m);
        if (k < 0)
                log_error_errno(k, "Cannot start the ramp: %m");
}

/* ---- object ---------------------------------------------------------------- */

/* broker.hosts, or broker.host:broker.port: one TLS context each (its name is
 * what its certificate must match). Resolvers come with manager_start(). */
static int brokers_new(Manager *m, char *err, size_t errlen) {
        char **hosts = m->config.broker_hosts;
        size_t n = 0;
        int tls = m->config.tls_version_min == TLS_VERSION_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION, r;

        while (hosts && hosts[n])
                n++;

        m->brokers = calloc(MAX(n, (size_t) 1), sizeof *m->brokers);
        if (!m->brokers)
                return -ENOMEM;
        for (size_t i = 0; i < MAX(n, (size_t) 1); i++) {
                DeviceBroker *b = &m->brokers[i];
                char host[256];
                unsigned port = m->config.broker_port;

                if (n == 0)
                        snprintf(host, sizeof host, "%s", m->config.broker_host);
                else if (broker_endpoint_parse(hosts[i], m->config.broker_port, host, sizeof host, &port) < 0)
                        return errf(err, errlen, -EINVAL, "broker.hosts: bad entry '%s'", hosts[i]);
                b->host = strdup(host);
                if (!b->host)
                        return -ENOMEM;
                b->port = port;
                m->n_brokers++;
                r = mqtt_ssl_ctx_new(m->ca_store, b->host, tls, &b->ssl_ctx);
                if (r < 0)
                        return errf(err, errlen, r, "cannot set up TLS for broker '%s': %s", b->host, strerror(-r));
        }
        return 0;
}

static void ds_sign_observed(uint64_t nsec, void *userdata) {
        Manager *m = userdata;
        metrics_observe(m->metrics, METRIC_DS_SIGN, (nsec + 500) / 1000);
}

int manager_new(sd_event *e, const DaemonConfig *c, Fleet *fleet, size_t pos_first, size_t n,
                unsigned n_workers, MetricsBlock *metrics, Manager **ret, char *err, size_t errlen) {
        Manager *m;
        uint64_t seed = 0;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(e);
        m->fleet = fleet;
        m->n_workers = MAX(n_workers, 1u);
        m->pos_first = pos_first;
        if (!metrics) {
                m->metrics_own = calloc(1, metrics_block_size(n));
                if (!m->metrics_own) {
                        r = -ENOMEM;
                        goto fail;
                }
                (void) metrics_block_init(m->metrics_own, 0, n);
                metrics = m->metrics_own;
        }
        if (metrics->n_devices != n) {
                snprintf(err, errlen, "the metrics block holds %u devices, not %zu", metrics->n_devices, n);
                r = -EINVAL;
                goto fail;
        }
        m->metrics = metrics;
        r = daemon_config_init(&m->config);
        if (r < 0)
                goto fail;
        /* copy by re-applying: the config has owned strings */
        manager_reload(m, c);
        if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
                seed = (uint64_t) getpid() * 0x9E3779B97F4A7C15ULL ^ manager_now(m);
        rng_seed(&m->rng, seed);
        token_bucket_init(&m->connect_bucket, 1, 1, manager_now(m));
        manager_rates(m);

        if (asprintf(&m->ca_path, "%s/%s", fleet_path(fleet), FLEET_CA_FILE) < 0) {
                m->ca_path = NULL;
                r = -ENOMEM;
                goto fail;
        }
        r = keystore_load_ca(fleet_path(fleet), &m->ca_store, err, errlen);
        if (r < 0)
                goto fail;
        r = brokers_new(m, err, errlen);
        if (r < 0)
                goto fail;
        r = boot_cache_new(0, 0, &m->boot_cache);
        if (r < 0)
                goto fail;
        r = mqtt_loop_new(e, 1000, &m->mqtt);
        if (r < 0) {
                snprintf(err, errlen, "cannot set up the MQTT loop: %s", strerror(-r));
                goto fail;
        }
        m->dctx = (DeviceContext) {
                .event = m->event,
                .config = &m->config,
                .fleet = fleet,
                .mqtt = m->mqtt,
                .brokers = m->brokers,
                .n_brokers = m->n_brokers,
                .connect_bucket = &m->connect_bucket,
                .rng = &m->rng,
                .ca_path = m->ca_path,
                .boot_cache = m->boot_cache,
                .metrics = c->metrics_record ? m->metrics : NULL,
                .owner = m,
                .http = manager_http,
                .next_bind_address = next_bind_address,
                .state_changed = device_state_changed,
                .ota_slot_take = ota_slot_take,
                .ota_slot_release = ota_slot_release,
                .connect_slot_take = connect_slot_take,
                .connect_slot_release = connect_slot_release,
        };
        m->devices = calloc(MAX(n, (size_t) 1), sizeof(Device *));
        if (!m->devices) {
                r = -ENOMEM;
                goto fail;
        }
        for (size_t i = 0; i < n; i++) {
                const FleetDeviceEntry *fe = fleet_device_entry(fleet, pos_first + i);
                if (!fe) {
                        snprintf(err, errlen, "manifest has no device at position %zu", pos_first + i);
                        r = -ENOENT;
                        goto fail;
                }
                r = device_new(&m->dctx, fe, &m->metrics->devices[i], &m->devices[i]);
                if (r < 0)
                        goto fail;
                m->n_devices++;
                m->n_in_state[DEVICE_OFF]++;
        }
        memset(m->metrics->devices_in_state, 0, sizeof m->metrics->devices_in_state);
        m->metrics->devices_in_state[DEVICE_OFF] = m->n_devices;
        if (c->metrics_record)
                ds_provider_set_sign_observer(ds_sign_observed, m);
        *ret = m;
        return 0;
fail:
        manager_free(m);
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        m->stopping = true; /* no slot hand-over while the devices go */
        ds_provider_set_sign_observer(NULL, NULL);
        for (size_t i = 0; i < m->n_devices; i++)
                device_free(m->devices[i]);
        free(m->devices);
        slots_done(&m->ota_slots);
        slots_done(&m->connect_slots);
        sd_event_source_disable_unref(m->ramp_timer);
        sd_event_source_disable_unref(m->churn_timer);
        http_client_free(m->http);
        free(m->ca_path);
        mqtt_loop_free(m->mqtt);
        for (size_t i = 0; i < m->n_brokers; i++) {
                resolver_free(m->brokers[i].resolver);
                SSL_CTX_free(m->brokers[i].ssl_ctx);
                free(m->brokers[i].host);
        }
        free(m->brokers);
        boot_cache_free(m->boot_cache);
        X509_STORE_free(m->ca_store);
        daemon_config_done(&m->config);
        sd_event_unref(m->event);
        free(m->metrics_own);
        free(m);
        return NULL;
}

int manager_start(Manager *m) {
        int r;

        if (m->n_devices == 0)
                return 0;
        /* The broker's name is resolved off the loop; the ramp starts with
         * the first answer (at once for a numeric address). */
        for (size_t i = 0; i < m->n_brokers; i++) {
                r = resolver_new(m->event, m->brokers[i].host, resolver_changed, m, &m->brokers[i].resolver);
                if (r < 0)
                        return r;
        }
        r = sd_event_add_time_relative(m->event, &m->churn_timer, CLOCK_MONOTONIC, 1000000, 1000, churn_handler, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(m->churn_timer, SD_EVENT_ON);
        /* the ramp starts with the first broker that has an address; a
         * device whose broker has none yet waits for it */
        for (size_t i = 0; i < m->n_brokers; i++)
                if (resolver_n_addresses(m->brokers[i].resolver) > 0)
                        return manager_start_ramp(m);
        return 0;
}

void manager_stop(Manager *m, void (*done)(Manager *m, void *userdata), void *userdata) {
        m->stopping = true;
        m->stop_done = done;
        m->stop_userdata = userdata;
        if (m->ramp_timer)
                (void) sd_event_source_set_enabled(m->ramp_timer, SD_EVENT_OFF);
        if (m->churn_timer)
                (void) sd_event_source_set_enabled(m->churn_timer, SD_EVENT_OFF);
        for (size_t i = 0; i < m->n_devices; i++)
                device_stop(m->devices[i]);
        /* all were off already */
        manager_check_stopped(m);
}

void manager_reload(Manager *m, const DaemonConfig *c) {
        DaemonConfig *t = &m->config;
        bool first = !t->fleet_dir || m->n_devices == 0;

        /* The supervisor names the restart keys it ignores, once for all workers. */
        /* Live keys: copied. Restart keys: copied only on the first call. */
        if (first)
                daemon_config_copy(t, c);
        else
                daemon_config_apply_live(t, c);
        if (!first) {
                manager_rates(m);
                if (m->ramp_started)
                        ramp_set_rate(&m->ramp, m->config.ramp_rate / m->n_workers, manager_now(m));
                for (size_t i = 0; i < m->n_devices; i++)
                        device_reload(m->devices[i]);
        }
}

void manager_get_stats(Manager *m, ManagerStats *ret) {
        ManagerStats s = {
                .total = (uint32_t) m->n_devices,
                .online = (uint32_t) m->n_in_state[DEVICE_ONLINE],
                .failed = (uint32_t) (m->n_in_state[DEVICE_FAILED] + m->n_in_state[DEVICE_NO_CONNECT]),
                .connecting = (uint32_t) (m->n_in_state[DEVICE_BOOTING] + m->n_in_state[DEVICE_CONNECTING] +
                                          m->n_in_state[DEVICE_BACKOFF] + m->n_in_state[DEVICE_RESTARTING] +
                                          (m->stopping ? 0 : m->n_in_state[DEVICE_OFF])),
                .ramp_done = m->ramp_started && ramp_done(&m->ramp),
                .stopped = m->stopping && m->n_in_state[DEVICE_OFF] == m->n_devices,
                .ota_active = m->ota_slots.active,
                .boot_cache_hits = boot_cache_hits(m->boot_cache),
                .boot_cache_misses = boot_cache_misses(m->boot_cache),
                .ota_queued = (uint32_t) m->ota_slots.len,
        };

        /* O(devices) once per report: the message counters live in the
         * clients, and "settled" is the first outcome of each device. */
        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                s.msgs_in += device_msgs_in(d);
                s.msgs_out += device_msgs_out(d);
                if (!device_settled(d))
                        s.ramp_done = false;
        }
        *ret = s;
}

size_t manager_command(Manager *m, WorkerCommandType type, size_t pos_first, size_t count, const char *url) {
        size_t n = 0;

        if (m->stopping || pos_first < m->pos_first)
                return 0;
        for (size_t i = pos_first - m->pos_first; i < m->n_devices && n < count; i++, n++) {
                Device *d = m->devices[i];
                switch (type) {
                case WORKER_COMMAND_RESTART:
                        device_restart(d);
                        break;
                case WORKER_COMMAND_POWER_CUT:
                        device_power_cut(d);
                        break;
                case WORKER_COMMAND_OTA:
                        device_ota_now(d, url && *url ? url : NULL);
                        break;
                case WORKER_COMMAND_STORM:
                        device_drop(d, METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_STORM));
                        break;
                case _WORKER_COMMAND_MAX:
                case _WORKER_COMMAND_INVALID:
                        return n;
                }
        }
        return n;
}

void manager_update_gauges(Manager *m) {
        for (size_t s = 0; s < _DEVICE_STATE_MAX && s < METRIC_STATE_SLOTS; s++)
                m->metrics->devices_in_state[s] = m->n_in_state[s];
        ota_gauges(m);
}

void manager_log_summary(Manager *m, const char *prefix) {
        ManagerStats s;

        manager_get_stats(m, &s);
        log_info("%sonline %" PRIu32 "/%" PRIu32 ", connecting %" PRIu32 ", failed %" PRIu32
                 ", messages in %" PRIu64 " out %" PRIu64,
                 prefix ?: "", s.online, s.total, s.connecting, s.failed, s.msgs_in, s.msgs_out);
}
