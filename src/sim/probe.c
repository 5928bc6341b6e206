/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "basic/time-util.h"
#include "basic/errmsg.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "sim/backoff.h"
#include "sim/keystore.h"
#include "sim/probe-tracker.h"
#include "sim/probe.h"
#include "transport/mqtt.h"
#include "transport/resolver.h"

struct Probe {
        sd_event *event;
        MetricsBlock *block;            /* not owned */
        char *host;
        unsigned port, keepalive_s;
        char *log_topic, *telemetry_topic;
        bool connected_once;

        X509_STORE *ca;
        SSL_CTX *ssl_ctx;
        X509 *cert;
        EVP_PKEY *key;
        MqttLoop *loop;
        MqttClient *client;
        Resolver *resolver;
        const char *addr;               /* the resolver's, of the current attempt */
        ProbeTracker *tracker;
        Backoff backoff;
        sd_event_source *retry_timer;
};

/* "/esp/%s/log" -> "/esp/+/log" */
static char *topic_filter(const char *tmpl) {
        const char *p = strstr(tmpl, "%s");
        char *f;

        if (!p)
                return strdup(tmpl);
        if (asprintf(&f, "%.*s+%s", (int) (p - tmpl), tmpl, p + 2) < 0)
                return NULL;
        return f;
}

static void probe_connect(Probe *p);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        probe_connect(userdata);
        return 0;
}

static void probe_retry_later(Probe *p) {
        uint64_t ms = backoff_next_ms(&p->backoff, 0.5);

        (void) sd_event_source_set_time_relative(p->retry_timer, ms * 1000);
        (void) sd_event_source_set_enabled(p->retry_timer, SD_EVENT_ONESHOT);
}

/* A reading's "due" field: a number after "\"due\":", or 0. */
static uint64_t telemetry_due(const void *payload, size_t len) {
        char buf[512];
        size_t n = MIN(len, sizeof buf - 1);

        memcpy(buf, payload, n);
        buf[n] = 0;
        const char *d = strstr(buf, "\"due\":");
        if (!d)
                return 0;
        return strtoull(d + 6, NULL, 10);
}

static void on_message(MqttClient *c, const char *topic, const void *payload, size_t len, void *userdata) {
        Probe *p = userdata;
        char id[64];
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        metrics_count(p->block, METRIC_PROBE_MESSAGES, 1);
        if (probe_topic_id(p->log_topic, topic, id, sizeof id)) {
                int64_t lat = probe_tracker_log_line(p->tracker, id, now);
                if (lat >= 0)
                        metrics_observe(p->block, METRIC_COMMAND, (uint64_t) lat);
                return;
        }
        if (probe_topic_id(p->telemetry_topic, topic, id, sizeof id)) {
                uint64_t due = telemetry_due(payload, len), t = now_usec(CLOCK_REALTIME);
                if (due > 0 && due <= t)
                        metrics_observe(p->block, METRIC_TELEMETRY, t - due);
                return;
        }
        if (probe_command_topic(topic, id, sizeof id))
                (void) probe_tracker_command(p->tracker, id[0] ? id : NULL, now);
}

static void on_connect(MqttClient *c, int rc, void *userdata) {
        Probe *p = userdata;
        _cleanup_free_ char *logf = NULL, *telf = NULL;

        if (rc != 0) {
                log_warning("Probe: the broker refused the probe: %s (CONNACK %d)", mqtt_reason_string(rc), rc);
                return;
        }
        backoff_reset(&p->backoff);
        logf = topic_filter(p->log_topic);
        telf = topic_filter(p->telemetry_topic);
        /* QoS 0: the probe must not slow the broker down for its own sake */
        const char *filters[] = { "/esp/update/#", "/esp/restart", "/esp/+/update/#", "/esp/+/restart", logf, telf };
        for (size_t i = 0; i < ELEMENTSOF(filters); i++)
                if (filters[i])
                        (void) mqtt_client_subscribe(c, filters[i], 0);
        if (!p->connected_once)
                log_info("Probe: connected to %s:%u, timing commands and telemetry", p->host, p->port);
        p->connected_once = true;
}

static void on_disconnect(MqttClient *c, bool expected, int reason, void *userdata) {
        Probe *p = userdata;

        if (expected)
                return;
        log_warning("Probe: connection to %s:%u lost or failed: %s; retrying", p->host, p->port,
                    strerror(reason < 0 ? -reason : ECONNRESET));
        if (p->addr)
                resolver_connect_failed(p->resolver, p->addr);
        probe_retry_later(p);
}

static void on_suback(MqttClient *c, const char *filter, uint64_t usec, bool refused, void *userdata) {
        if (refused)
                log_warning("Probe: the broker refused the subscription to '%s': the probe needs read access "
                            "to the device topics (an operator certificate)", filter);
}

static void probe_connect(Probe *p) {
        int r;

        p->addr = resolver_next_address(p->resolver);
        if (!p->addr) {
                probe_retry_later(p);
                return;
        }
        r = mqtt_client_connect(p->client, p->addr, p->port, NULL, p->keepalive_s);
        if (r < 0) {
                log_warning_errno(r, "Probe: cannot connect to %s:%u: %m; retrying", p->host, p->port);
                resolver_connect_failed(p->resolver, p->addr);
                probe_retry_later(p);
        }
}

static void resolved(Resolver *r, void *userdata) {
        Probe *p = userdata;

        if (p->client && !mqtt_client_is_connected(p->client) && !p->connected_once)
                probe_connect(p);
}

static int load_identity(Probe *p, const char *cert_path, const char *key_path, char *err, size_t errlen) {
        FILE *f;

        f = fopen(cert_path, "re");
        if (!f)
                return errf(err, errlen, -errno, "probe.cert '%s': %s", cert_path, strerror(errno));
        p->cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        if (!p->cert) {
                ERR_clear_error();
                return errf(err, errlen, -EBADMSG, "probe.cert '%s': not a PEM certificate", cert_path);
        }
        f = fopen(key_path, "re");
        if (!f)
                return errf(err, errlen, -errno, "probe.key '%s': %s", key_path, strerror(errno));
        p->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!p->key) {
                ERR_clear_error();
                return errf(err, errlen, -EBADMSG, "probe.key '%s': not a PEM private key (or it is encrypted)",
                            key_path);
        }
        if (mqtt_identity_check(p->cert, p->key) < 0)
                return errf(err, errlen, -EKEYREJECTED, "probe.key '%s' does not belong to probe.cert '%s'",
                            key_path, cert_path);
        return 0;
}

int probe_new(sd_event *e, const DaemonConfig *c, MetricsBlock *block, Probe **ret, char *err, size_t errlen) {
        char id[64];
        int r;

        if (!c->probe_cert || !*c->probe_cert || !c->probe_key || !*c->probe_key)
                return errf(err, errlen, -EINVAL, "probe.enabled needs probe.cert and probe.key (an operator identity)");
        Probe *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(e);
        p->block = block;
        p->port = c->broker_port;
        p->keepalive_s = c->keepalive_s;
        p->host = strdup(c->broker_host);
        p->log_topic = strdup(c->log_topic);
        p->telemetry_topic = strdup(c->telemetry_topic);
        if (!p->host || !p->log_topic || !p->telemetry_topic) {
                r = -ENOMEM;
                goto fail;
        }
        backoff_init(&p->backoff, 1000, 30000, 0.5);
        r = load_identity(p, c->probe_cert, c->probe_key, err, errlen);
        if (r < 0)
                goto fail;
        r = keystore_load_ca(c->fleet_dir, &p->ca, err, errlen);
        if (r < 0)
                goto fail;
        r = mqtt_ssl_ctx_new(p->ca, c->broker_host,
                             c->tls_version_min == TLS_VERSION_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION, &p->ssl_ctx);
        if (r < 0) {
                errf(err, errlen, r, "probe: cannot set up TLS for '%s'", c->broker_host);
                goto fail;
        }
        r = probe_tracker_new(&p->tracker);
        if (r < 0)
                goto fail;
        r = mqtt_loop_new(e, 1000, &p->loop);
        if (r < 0)
                goto fail;
        snprintf(id, sizeof id, "espfleet-probe-%d", (int) getpid());
        MqttCallbacks cb = { .on_connect = on_connect, .on_disconnect = on_disconnect, .on_message = on_message,
                             .on_suback = on_suback };
        r = mqtt_client_new(p->loop, id, p->ssl_ctx, p->cert, p->key, &cb, p, &p->client);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &p->retry_timer, CLOCK_MONOTONIC, 1000000, 100000, on_retry, p);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_enabled(p->retry_timer, SD_EVENT_OFF);
        r = resolver_new(e, c->broker_host, resolved, p, &p->resolver);
        if (r < 0)
                goto fail;
        if (resolver_n_addresses(p->resolver) > 0)
                probe_connect(p);
        *ret = p;
        return 0;
fail:
        if (r == -ENOMEM && err && !*err)
                errf(err, errlen, r, "probe: out of memory");
        probe_free(p);
        return r;
}

Probe *probe_free(Probe *p) {
        if (!p)
                return NULL;
        if (p->client && mqtt_client_is_connected(p->client))
                (void) mqtt_client_disconnect(p->client);
        mqtt_client_free(p->client);
        mqtt_loop_free(p->loop);
        resolver_free(p->resolver);
        sd_event_source_disable_unref(p->retry_timer);
        probe_tracker_free(p->tracker);
        SSL_CTX_free(p->ssl_ctx);
        X509_STORE_free(p->ca);
        X509_free(p->cert);
        EVP_PKEY_free(p->key);
        free(p->host);
        free(p->log_topic);
        free(p->telemetry_topic);
        sd_event_unref(p->event);
        free(p);
        return NULL;
}
