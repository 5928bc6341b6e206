/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <inttypes.h>
#include <sys/random.h>
#include <time.h>

#include "basic/log.h"
#include "sim/keystore.h"
#include "sim/manager-internal.h"

uint64_t manager_now(Manager *m) {
        uint64_t t;

        if (sd_event_now(m->event, CLOCK_MONOTONIC, &t) < 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                t = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
        }
        return t;
}

const char *manager_next_bind_address(Manager *m) {
        char **b = m->config.bind_addresses;
        size_t n = 0;

        while (b && b[n])
                n++;
        if (n == 0)
                return NULL;
        return b[m->bind_next++ % n];
}

HttpClient *manager_http(Manager *m) {
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

static void manager_rates(Manager *m) {
        double share = m->config.connect_rate_max / m->n_workers;
        token_bucket_set_rate(&m->connect_bucket, share, MAX(1.0, share / 10), manager_now(m));
}

void manager_device_changed(Manager *m, Device *d) {
        if (!m->stopping || !m->stop_done)
                return;
        for (size_t i = 0; i < m->n_devices; i++)
                if (device_get_state(m->devices[i]) != DEVICE_OFF)
                        return;
        void (*done)(Manager *, void *) = m->stop_done;
        m->stop_done = NULL;
        done(m, m->stop_userdata);
}

/* Slot i of the ramp: i / rate, shifted by up to ±jitter/2 of a slot. */
static uint64_t ramp_slot_usec(Manager *m, size_t i) {
        double rate = m->config.ramp_rate / m->n_workers;
        double j = (rng_double(&m->rng) - 0.5) * m->config.ramp_jitter;
        double t = ((double) i + j) / rate;
        return m->ramp_start_usec + (uint64_t) (MAX(t, 0.0) * 1e6);
}

static int ramp_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (m->stopping)
                return 0;
        /* Start every device whose slot has come (the loop may have been busy). */
        uint64_t now = manager_now(m);
        while (m->ramp_next < m->n_devices) {
                device_start(m->devices[m->ramp_next++]);
                if (m->ramp_next >= m->n_devices)
                        break;
                uint64_t next = ramp_slot_usec(m, m->ramp_next);
                if (next > now) {
                        (void) sd_event_source_set_time(s, next);
                        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                        return 0;
                }
        }
        log_info("Ramp: all %zu devices started", m->n_devices);
        return 0;
}

int manager_new(sd_event *e, const DaemonConfig *c, Fleet *fleet, size_t pos_first, size_t n,
                unsigned n_workers, Manager **ret, char *err, size_t errlen) {
        Manager *m;
        uint64_t seed = 0;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(e);
        m->fleet = fleet;
        m->n_workers = MAX(n_workers, 1u);
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
        r = mqtt_loop_new(e, 1000, &m->mqtt);
        if (r < 0) {
                snprintf(err, errlen, "cannot set up the MQTT loop: %s", strerror(-r));
                goto fail;
        }
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
                r = device_new(m, fe, &m->devices[i]);
                if (r < 0)
                        goto fail;
                m->n_devices++;
        }
        *ret = m;
        return 0;
fail:
        manager_free(m);
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_devices; i++)
                device_free(m->devices[i]);
        free(m->devices);
        sd_event_source_disable_unref(m->ramp_timer);
        http_client_free(m->http);
        free(m->ca_path);
        mqtt_loop_free(m->mqtt);
        X509_STORE_free(m->ca_store);
        daemon_config_done(&m->config);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_start(Manager *m) {
        int r;

        if (m->n_devices == 0)
                return 0;
        m->ramp_start_usec = manager_now(m);
        r = sd_event_add_time(m->event, &m->ramp_timer, CLOCK_MONOTONIC, ramp_slot_usec(m, 0), 1000, ramp_handler, m);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->ramp_timer, SD_EVENT_ONESHOT);
}

void manager_stop(Manager *m, void (*done)(Manager *m, void *userdata), void *userdata) {
        m->stopping = true;
        m->stop_done = done;
        m->stop_userdata = userdata;
        if (m->ramp_timer)
                (void) sd_event_source_set_enabled(m->ramp_timer, SD_EVENT_OFF);
        for (size_t i = 0; i < m->n_devices; i++)
                device_stop(m->devices[i]);
        /* all were off already */
        manager_device_changed(m, NULL);
}

static char *strdup_or_keep(const char *s) {
        return strdup(s ?: "");
}

void manager_reload(Manager *m, const DaemonConfig *c) {
        DaemonConfig *t = &m->config;
        const char *changed = NULL;
        bool first = !t->fleet_dir || m->n_devices == 0;

        if (!first && daemon_config_needs_restart(t, c, &changed))
                log_warning("Config key '%s' changed: it takes effect after a daemon restart, ignoring", changed);

        /* Live keys: copied. Restart keys: copied only on the first call. */
#define COPY_STR(f) do { char *_n = strdup_or_keep(c->f); if (_n) { free(t->f); t->f = _n; } } while (0)
        if (first) {
                COPY_STR(fleet_dir);
                t->first_device = c->first_device;
                t->device_count = c->device_count;
                t->workers = c->workers;
                t->devices_per_worker_max = c->devices_per_worker_max;
                COPY_STR(broker_host);
                t->broker_port = c->broker_port;
                size_t n = 0;
                while (c->bind_addresses && c->bind_addresses[n])
                        n++;
                char **v = calloc(n + 1, sizeof(char *));
                if (v) {
                        for (size_t i = 0; i < n; i++)
                                v[i] = strdup(c->bind_addresses[i]);
                        for (char **p = t->bind_addresses; p && *p; p++)
                                free(*p);
                        free(t->bind_addresses);
                        t->bind_addresses = v;
                }
                t->keepalive_s = c->keepalive_s;
                t->tls_version_min = c->tls_version_min;
                t->qos = c->qos;
                t->default_interval_s = c->default_interval_s;
        }
        t->ramp_rate = c->ramp_rate;
        t->ramp_jitter = c->ramp_jitter;
        t->backoff_min_ms = c->backoff_min_ms;
        t->backoff_max_ms = c->backoff_max_ms;
        t->backoff_jitter = c->backoff_jitter;
        t->connect_rate_max = c->connect_rate_max;
        t->connect_timeout_ms = c->connect_timeout_ms;
        t->give_up_after = c->give_up_after;
        t->boot_time_ms = c->boot_time_ms;
        COPY_STR(log_topic);
        COPY_STR(status_topic);
        COPY_STR(telemetry_topic);
        t->telemetry_enabled = c->telemetry_enabled;
        t->telemetry_interval_s = c->telemetry_interval_s;
        COPY_STR(ota_default_url);
        t->ota_allow_equal_version = c->ota_allow_equal_version;
        t->ota_start_jitter_ms = c->ota_start_jitter_ms;
        t->ota_confirm_timeout_s = c->ota_confirm_timeout_s;
        t->summary_interval_s = c->summary_interval_s;
        COPY_STR(log_level);
        COPY_STR(debug_topics);
#undef COPY_STR
        if (!first) {
                manager_rates(m);
                for (size_t i = 0; i < m->n_devices; i++)
                        device_reload(m->devices[i]);
        }
}

void manager_get_stats(Manager *m, ManagerStats *ret) {
        ManagerStats s = { .total = (uint32_t) m->n_devices, .ramp_done = m->ramp_next >= m->n_devices,
                           .stopped = m->stopping };

        for (size_t i = 0; i < m->n_devices; i++) {
                Device *d = m->devices[i];
                s.msgs_in += device_msgs_in(d);
                s.msgs_out += device_msgs_out(d);
                switch (device_get_state(d)) {
                case DEVICE_ONLINE:
                        s.online++;
                        break;
                case DEVICE_FAILED:
                case DEVICE_NO_CONNECT:
                        s.failed++;
                        break;
                case DEVICE_BOOTING:
                case DEVICE_CONNECTING:
                case DEVICE_BACKOFF:
                case DEVICE_RESTARTING:
                        s.connecting++;
                        break;
                case DEVICE_OFF:
                        if (!m->stopping)
                                s.connecting++;
                        else
                                continue;
                        break;
                case DEVICE_STOPPING:
                        break;
                case _DEVICE_STATE_MAX:
                case _DEVICE_STATE_INVALID:
                        break;
                }
                if (!device_settled(d))
                        s.ramp_done = false;
                if (m->stopping && device_get_state(d) != DEVICE_OFF)
                        s.stopped = false;
        }
        *ret = s;
}

void manager_log_summary(Manager *m, const char *prefix) {
        ManagerStats s;

        manager_get_stats(m, &s);
        log_info("%sonline %" PRIu32 "/%" PRIu32 ", connecting %" PRIu32 ", failed %" PRIu32
                 ", messages in %" PRIu64 " out %" PRIu64,
                 prefix ?: "", s.online, s.total, s.connecting, s.failed, s.msgs_in, s.msgs_out);
}
