/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <openssl/err.h>
#include <syslog.h>

#include "basic/openssl-util.h"
#include "basic/time-util.h"
#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/string-table.h"
#include "dsemu/efuse.h"
#include "image/app-image.h"
#include "nvs/nvs.h"
#include "ota/boot.h"
#include "ota/ota-session.h"
#include "sim/device.h"
#include "sim/esplog.h"
#include "sim/keystore.h"
#include "sim/payload.h"
#include "sim/settings.h"

#define TOPIC_MAX 256
#define RESTART_DRAIN_USEC (2 * 1000000ULL)

static const char *const device_state_table[_DEVICE_STATE_MAX] = {
        [DEVICE_OFF] = "off",
        [DEVICE_BOOTING] = "booting",
        [DEVICE_CONNECTING] = "connecting",
        [DEVICE_ONLINE] = "online",
        [DEVICE_BACKOFF] = "backoff",
        [DEVICE_RESTARTING] = "restarting",
        [DEVICE_NO_CONNECT] = "no-connect",
        [DEVICE_FAILED] = "failed",
        [DEVICE_STOPPING] = "stopping",
};
DEFINE_STRING_TABLE_LOOKUP(device_state, DeviceState);

struct Device {
        const DeviceContext *ctx;       /* not owned */
        unsigned index;
        char id[FLEET_ID_MAX];

        DeviceState state;
        bool in_transition;             /* device_enter_state() is running: queue, do not recurse */
        bool has_queued_state;
        DeviceState queued_state;
        sd_event_source *timer;         /* the current state's timer */
        sd_event_source *telemetry_timer;

        FleetDevice *fd;                /* loaded at the first boot */
        DeviceIdentity identity;
        MqttClient *client;
        SettingsStore *settings_store;
        DeviceSettings settings;        /* as stored */
        uint32_t interval_effective;    /* the interval read at boot (secure_esp: after restart) */
        char version[33];               /* esp_app_desc_t.version */

        uint64_t boot_usec;             /* CLOCK_MONOTONIC at the last reset */
        Backoff backoff;
        unsigned failures;              /* consecutive failed connection attempts */
        bool waiting_slot;              /* CONNECTING: waiting for a token (or the broker's address) */
        const DeviceBroker *broker;     /* of the worker's brokers, this device's */
        const char *broker_addr;        /* the resolver's address of the current attempt */
        bool restart_disconnecting;     /* RESTARTING: offline status and DISCONNECT sent */
        bool settled;
        bool ever_online;
        double temperature, humidity;
        uint32_t telemetry_seq;         /* readings since boot (RAM: a reboot starts at 0 again) */

        BootResult boot;                /* the last boot_run(): running app, log lines */
        bool boot_ok;
        char **pending;                 /* ESP-IDF lines to publish once online */
        size_t n_pending;
        sd_event_source *confirm_timer; /* PENDING_VERIFY app must reach the broker in time */
        sd_event_source *ota_timer;     /* periodic OTA every `interval` s */
        OtaSession *ota;
        bool ota_waiting;               /* queued for a download slot (ota.max_concurrent) */
        bool ota_waiting_broadcast;
        bool ota_has_slot;
        bool connect_waiting;           /* CONNECTING: in line for an attempt slot */
        bool connect_has_slot;

        /* Measurements (metrics/metrics.h): times are CLOCK_MONOTONIC µs. */
        MetricsDevice *rec;             /* this device's record in the worker's block; not owned */
        uint64_t start_due_usec;        /* device_start(): when the ramp wanted us up */
        uint64_t connect_due_usec;      /* when the current attempt was due */
        bool connect_timed_out;
        bool booted_once;
        bool power_cut;                 /* a reset (power cut, operator restart) is dropping the connection */
        uint64_t ota_run_usec;          /* update/run received, until online with another version */
        char ota_from_version[33];
        uint64_t ota_start_usec, ota_written_usec;
        char *ota_url_override;         /* device_ota_now(url) */
        unsigned drop_reason;           /* device_drop() is dropping the connection: its metrics reason */
        bool reboot_pending;            /* an OTA finished while connecting: reboot once the attempt ends */
};

static void device_enter_state(Device *d, DeviceState s);
static void device_flash_idle(Device *d);

static const DaemonConfig *cfg(Device *d) {
        return d->ctx->config;
}

static uint64_t device_now(Device *d) {
        uint64_t t = 0;
        (void) sd_event_now(d->ctx->event, CLOCK_MONOTONIC, &t);
        return t;
}

static MetricsBlock *mb(Device *d) {
        return d->ctx->metrics;
}

/* The device's last error, for `espfleet status` and the reports. */
static void device_note_error(Device *d, const char *fmt, ...) _printf_(2, 3);
static void device_note_error(Device *d, const char *fmt, ...) {
        char buf[sizeof d->rec->last_error];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        metrics_device_begin(d->rec);
        metrics_set_field(d->rec->last_error, buf);
        d->rec->last_error_usec = now_usec(CLOCK_REALTIME);
        metrics_device_end(d->rec);
}

static void rec_disconnected(Device *d) {
        metrics_device_begin(d->rec);
        d->rec->disconnects++;
        metrics_device_end(d->rec);
}

static int device_publish(Device *d, const char *topic, const void *payload, size_t len, int qos, bool retain,
                          uint64_t due_usec) {
        int r = mqtt_client_publish_due(d->client, topic, payload, len, qos, retain, due_usec ?: now_usec(CLOCK_MONOTONIC));
        if (r >= 0)
                metrics_count(mb(d), METRIC_MESSAGES_OUT, 1);
        return r;
}

static uint32_t ms_since_boot(Device *d) {
        return (uint32_t) ((device_now(d) - d->boot_usec) / 1000);
}

/* A line to the log topic: as ESP-IDF prints it, or with "[id] " before it
 * (device.log_id_prefix) so that a shared topic tells devices apart. */
static void device_publish_line(Device *d, const char *topic, const char *line, size_t len) {
        char buf[600];

        if (cfg(d)->log_id_prefix) {
                int k = snprintf(buf, sizeof buf, "[%s] %.*s", d->id, (int) MIN(len, (size_t) INT_MAX), line);
                if (k > 0) {
                        line = buf;
                        len = MIN((size_t) k, sizeof buf - 1);
                }
        }
        (void) device_publish(d, topic, line, len, (int) cfg(d)->qos, false, 0);
}

/* A line on the device's log topic, ESP-IDF formatted, and the same line in
 * the daemon's log at debug (the caller logs what the operator must see). */
static void device_esp_log(Device *d, EspLogLevel level, const char *tag, const char *fmt, ...) _printf_(4, 5);
static void device_esp_log(Device *d, EspLogLevel level, const char *tag, const char *fmt, ...) {
        char line[512], topic[TOPIC_MAX];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = esp_log_vformat(line, sizeof line, level, ms_since_boot(d), tag, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        log_dev_debug(d->id, "%s", line);
        if (!d->client || !mqtt_client_is_connected(d->client))
                return;
        if (topic_expand(cfg(d)->log_topic, d->id, topic, sizeof topic) < 0)
                return;
        device_publish_line(d, topic, line, (size_t) n);
}

/* Keeps a preformatted line for the log topic until the device is online
 * (the bootloader's lines, a rollback notice). */
static void device_queue_line(Device *d, const char *line) {
        char **n;

        if (d->n_pending >= 64)
                return;
        n = realloc(d->pending, (d->n_pending + 1) * sizeof(char *));
        if (!n)
                return;
        d->pending = n;
        d->pending[d->n_pending] = strdup(line);
        if (d->pending[d->n_pending])
                d->n_pending++;
}

static void device_queue_esp(Device *d, EspLogLevel level, const char *tag, const char *fmt, ...) _printf_(4, 5);
static void device_queue_esp(Device *d, EspLogLevel level, const char *tag, const char *fmt, ...) {
        char line[512];
        va_list ap;

        va_start(ap, fmt);
        int n = esp_log_vformat(line, sizeof line, level, ms_since_boot(d), tag, fmt, ap);
        va_end(ap);
        if (n >= 0)
                device_queue_line(d, line);
}

static void device_flush_pending(Device *d) {
        char topic[TOPIC_MAX];
        bool ok = topic_expand(cfg(d)->log_topic, d->id, topic, sizeof topic) >= 0;

        for (size_t i = 0; i < d->n_pending; i++) {
                if (ok && d->client)
                        device_publish_line(d, topic, d->pending[i], strlen(d->pending[i]));
                free(d->pending[i]);
        }
        free(d->pending);
        d->pending = NULL;
        d->n_pending = 0;
}

static int device_timer_handler(sd_event_source *s, uint64_t usec, void *userdata);

static void device_arm(Device *d, uint64_t usec) {
        int r;

        if (!d->timer) {
                r = sd_event_add_time_relative(d->ctx->event, &d->timer, CLOCK_MONOTONIC, usec, 1000,
                                               device_timer_handler, d);
                if (r < 0) {
                        log_dev_error_errno(d->id, r, "Failed to add a timer: %m");
                        return;
                }
        } else {
                (void) sd_event_source_set_time_relative(d->timer, usec);
        }
        (void) sd_event_source_set_enabled(d->timer, SD_EVENT_ONESHOT);
}

static void device_arm_at(Device *d, uint64_t when) {
        uint64_t now = device_now(d);
        device_arm(d, when > now ? when - now : 0);
}

static void device_disarm(Device *d) {
        if (d->timer)
                (void) sd_event_source_set_enabled(d->timer, SD_EVENT_OFF);
}

static void publish_status(Device *d, bool online) {
        char topic[TOPIC_MAX], payload[160];
        int n;

        if (!d->client || topic_expand(cfg(d)->status_topic, d->id, topic, sizeof topic) < 0)
                return;
        n = snprintf(payload, sizeof payload, "{\"state\":\"%s\",\"version\":\"%s\"}",
                     online ? "online" : "offline", d->version);
        /* "offline" goes out right before DISCONNECT: QoS 0, because a QoS 1
         * publish whose PUBACK is still in flight when the connection closes
         * makes mosquitto < 2.0.22 log a bogus "disconnected due to out of
         * memory" (eclipse-mosquitto/mosquitto#3253). TCP keeps the order, so
         * the broker still stores it before it handles the DISCONNECT. */
        (void) device_publish(d, topic, payload, (size_t) n, online ? 1 : 0, true, 0);
}

/* ---- loading ----------------------------------------------------------- */

static int device_load(Device *d) {
        char err[512] = "";
        int r;

        if (d->fd)
                return 0;
        r = fleet_device_load(d->ctx->fleet, d->index, &d->fd, err, sizeof err);
        if (r < 0)
                return log_dev_error_errno(d->id, r, "Cannot load device: %s", err);
        r = keystore_load(d->fd, &d->identity, err, sizeof err);
        if (r < 0)
                return log_dev_error_errno(d->id, r, "%s", err);
        fleet_device_forget_ds_data(d->fd);
        r = mqtt_identity_check(d->identity.cert, d->identity.key);
        if (r < 0)
                return log_dev_error_errno(d->id, r, "Cannot set up TLS: the certificate does not hold the DS key's public key");
        const FleetConfig *fc = fleet_config(d->ctx->fleet);
        NvsXtsKeys keys;
        if (fc->nvs_encryption) {
                r = fleet_device_nvs_keys(d->fd, (unsigned) fc->nvs_key_block, &keys);
                if (r < 0)
                        return log_dev_error_errno(d->id, r, "Cannot derive the NVS encryption keys: %s",
                                                   esp_err_to_name(r));
        }
        r = settings_store_open(d->fd->flash, d->fd->partitions, fc->nvs_encryption ? &keys : NULL,
                                &d->settings_store);
        explicit_bzero(&keys, sizeof keys);
        if (r < 0)
                return log_dev_error_errno(d->id, r, "Cannot open the settings store (nvs partition): %s",
                                           esp_err_to_name(r));
        return 0;
}

/* ---- MQTT callbacks ---------------------------------------------------- */

static void device_start_ota(Device *d, bool broadcast);

static void handle_command(Device *d, DeviceCommand c, bool broadcast, const void *payload, size_t len) {
        const char *name = device_command_to_string(c);
        char reason[256] = "";
        DeviceSettings s = d->settings;
        int r = -EINVAL;

        switch (c) {
        case DEVICE_COMMAND_URL:
                r = payload_parse_url(payload, len, s.url, sizeof s.url, reason, sizeof reason);
                break;
        case DEVICE_COMMAND_USE_URL:
                r = payload_parse_use_url(payload, len, &s.use_url, reason, sizeof reason);
                break;
        case DEVICE_COMMAND_INTERVAL:
                r = payload_parse_interval(payload, len, &s.interval, reason, sizeof reason);
                break;
        case DEVICE_COMMAND_RUN:
                log_dev_info(d->id, "Command %s%s accepted", name, broadcast ? " (broadcast)" : "");
                if (!d->ota_run_usec) {
                        d->ota_run_usec = now_usec(CLOCK_MONOTONIC);
                        snprintf(d->ota_from_version, sizeof d->ota_from_version, "%s", d->version);
                }
                device_start_ota(d, broadcast);
                return;
        case DEVICE_COMMAND_RESTART:
                device_esp_log(d, ESP_LOG_INFO, "secure_esp", "restart: Restarting now");
                log_dev_info(d->id, "Command %s%s accepted, rebooting", name, broadcast ? " (broadcast)" : "");
                device_enter_state(d, DEVICE_RESTARTING);
                return;
        case _DEVICE_COMMAND_MAX:
        case _DEVICE_COMMAND_INVALID:
                return;
        }
        if (r < 0) {
                device_esp_log(d, ESP_LOG_WARN, "secure_esp", "%s rejected: %s", name, reason);
                log_dev_warning(d->id, "Command %s%s rejected: %s", name, broadcast ? " (broadcast)" : "", reason);
                return;
        }
        r = settings_save(d->settings_store, &s);
        device_flash_idle(d);
        if (r < 0) {
                device_esp_log(d, ESP_LOG_ERROR, "secure_esp", "%s: saving to NVS failed: %s", name, esp_err_to_name(r));
                log_dev_error_errno(d->id, r, "Command %s: cannot save the settings: %m", name);
                return;
        }
        d->settings = s;
        switch (c) {
        case DEVICE_COMMAND_URL:
                device_esp_log(d, ESP_LOG_INFO, "secure_esp", "update/url: saved '%s'", s.url);
                log_dev_info(d->id, "Command %s%s accepted: url='%s'", name, broadcast ? " (broadcast)" : "", s.url);
                break;
        case DEVICE_COMMAND_USE_URL:
                device_esp_log(d, ESP_LOG_INFO, "secure_esp", "update/use_url: saved %u", s.use_url);
                log_dev_info(d->id, "Command %s%s accepted: use_url=%u", name, broadcast ? " (broadcast)" : "", s.use_url);
                break;
        case DEVICE_COMMAND_INTERVAL:
                device_esp_log(d, ESP_LOG_INFO, "secure_esp",
                               "update/interval: saved %" PRIu32 " s, effective after restart", s.interval);
                log_dev_info(d->id, "Command %s%s accepted: interval=%" PRIu32, name, broadcast ? " (broadcast)" : "",
                             s.interval);
                break;
        case DEVICE_COMMAND_RUN:
        case DEVICE_COMMAND_RESTART:
        case _DEVICE_COMMAND_MAX:
        case _DEVICE_COMMAND_INVALID:
                break;
        }
}

static void on_message(MqttClient *c, const char *topic, const void *payload, size_t len, void *userdata) {
        Device *d = userdata;
        DeviceCommand cmd;
        bool broadcast;

        metrics_count(mb(d), METRIC_MESSAGES_IN, 1);
        if (d->state != DEVICE_ONLINE)
                return;
        if (command_from_topic(topic, d->id, &cmd, &broadcast) < 0) {
                log_dev_debug(d->id, "Ignoring message on '%s'", topic);
                return;
        }
        handle_command(d, cmd, broadcast, payload, len);
}

static void restart_disconnect(Device *d);

static void on_drained(MqttClient *c, void *userdata) {
        Device *d = userdata;

        if (d->state == DEVICE_RESTARTING)
                restart_disconnect(d);
}

/* The phases of the attempt that just ended, into the histograms. */
static void attempt_measure(Device *d, bool accepted) {
        const MqttAttemptInfo *a = mqtt_client_attempt(d->client);
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (a->tcp_usec && a->tls_usec)
                log_dev_debug(d->id, "Attempt %s: TCP %.1f ms, TLS %.1f ms, then %.1f ms", accepted ? "accepted" : "failed",
                              (a->tcp_usec - a->started_usec) / 1e3, (a->tls_usec - a->tcp_usec) / 1e3,
                              (now - a->tls_usec) / 1e3);
        if (a->tcp_usec && a->tcp_usec >= a->started_usec)
                metrics_observe(mb(d), METRIC_TCP_CONNECT, a->tcp_usec - a->started_usec);
        if (a->tls_usec && a->tcp_usec && a->tls_usec >= a->tcp_usec)
                metrics_observe(mb(d), METRIC_TLS_HANDSHAKE, a->tls_usec - a->tcp_usec);
        if (!accepted)
                return;
        uint64_t due = d->connect_due_usec && d->connect_due_usec <= now ? d->connect_due_usec : a->started_usec;
        uint64_t total = now - MIN(due, now);
        if (a->tls_usec && now >= a->tls_usec)
                metrics_observe(mb(d), METRIC_CONNACK, now - a->tls_usec);
        metrics_observe(mb(d), METRIC_CONNECT, total);
        metrics_count(mb(d), METRIC_CONNECTS, 1);
        metrics_device_begin(d->rec);
        d->rec->connects++;
        d->rec->online_ever = 1;
        d->rec->last_connect_usec = total;
        d->rec->max_connect_usec = MAX(d->rec->max_connect_usec, total);
        metrics_device_end(d->rec);
}

/* Why the attempt failed, as a metrics reason (metrics.h). */
static unsigned attempt_failure_reason(Device *d, int reason) {
        const MqttAttemptInfo *a = mqtt_client_attempt(d->client);
        int e = reason < 0 ? -reason : 0;

        if (a->connack > 0)
                return METRIC_REASON(METRIC_REASON_CONNACK, a->connack);
        if (a->alert_received >= 0)
                return METRIC_REASON(METRIC_REASON_TLS_ALERT, a->alert_received);
        if (a->alert_sent >= 0 && a->verify_result != X509_V_OK)
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_CERT_VERIFY);
        if (d->connect_timed_out)
                return METRIC_REASON(METRIC_REASON_GENERIC, !a->tcp_usec ? METRIC_REASON_TCP_TIMEOUT :
                                     !a->tls_usec ? METRIC_REASON_TLS_HANDSHAKE : METRIC_REASON_NO_CONNACK);
        switch (e) {
        case ECONNREFUSED:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_REFUSED);
        case ETIMEDOUT:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_TIMEOUT);
        case EHOSTUNREACH:
        case ENETUNREACH:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_UNREACHABLE);
        default:
                break;
        }
        if (a->tcp_usec && !a->tls_usec)
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TLS_HANDSHAKE);
        if (a->tls_usec)
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_NO_CONNACK);
        if (e == ECONNRESET)
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_RESET);
        return e > 0 && e < 256 ? METRIC_REASON(METRIC_REASON_ERRNO, e)
                                : METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_OTHER);
}

static unsigned disconnect_reason(int reason) {
        switch (reason < 0 ? -reason : 0) {
        case 0:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_REQUESTED);
        case ETIMEDOUT:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_KEEPALIVE);
        case ECONNRESET:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_RESET);
        case EPROTO:
                return METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_PROTOCOL);
        default:
                return reason < 0 && -reason < 256 ? METRIC_REASON(METRIC_REASON_ERRNO, -reason)
                                                   : METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_OTHER);
        }
}

static void on_suback(MqttClient *c, const char *filter, uint64_t usec, bool refused, void *userdata) {
        Device *d = userdata;

        metrics_observe(mb(d), METRIC_SUBACK, usec);
        if (!refused)
                return;
        metrics_connect_failed(mb(d), METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_SUBACK_REFUSED));
        log_dev_warning(d->id, "Broker refused the subscription to '%s' (SUBACK 0x80): commands on it will not arrive",
                        filter);
        device_note_error(d, "SUBACK refused '%s'", filter);
}

static void on_puback(MqttClient *c, uint64_t usec, void *userdata) {
        Device *d = userdata;
        metrics_observe(mb(d), METRIC_PUBACK, usec);
}

static void on_connect(MqttClient *c, int rc, void *userdata) {
        Device *d = userdata;

        if (rc != 0) {
                log_dev_warning(d->id, "Broker refused the connection: %s (CONNACK %d)", mqtt_reason_string(rc), rc);
                return; /* libmosquitto closes; on_disconnect follows */
        }
        if (d->state == DEVICE_CONNECTING) {
                attempt_measure(d, true);
                device_enter_state(d, DEVICE_ONLINE);
        }
}

/* After a failed attempt or a lost connection: BACKOFF, or FAILED once
 * reconnect.give_up_after attempts in a row failed. */
static void retry_or_give_up(Device *d) {
        d->settled = true;
        if (cfg(d)->give_up_after > 0 && d->failures >= cfg(d)->give_up_after) {
                log_dev_error(d->id, "Giving up after %u failed connection attempts", d->failures);
                device_enter_state(d, DEVICE_FAILED);
        } else
                device_enter_state(d, DEVICE_BACKOFF);
}

/* A connection attempt that failed (asynchronously, or already inside
 * connect()): counted by reason, logged in words, then BACKOFF or FAILED. */
static void attempt_failed(Device *d, int reason) {
        char obuf[256];
        const char *ebuf = openssl_last_error(obuf, sizeof obuf, "");
        d->failures++;
        resolver_connect_failed(d->broker->resolver, d->broker_addr);
        char rbuf[64];
        unsigned why = attempt_failure_reason(d, reason);
        const char *why_name = metrics_reason_name(why, rbuf, sizeof rbuf) ?: "other";
        attempt_measure(d, false);
        metrics_connect_failed(mb(d), why);
        metrics_device_begin(d->rec);
        d->rec->connect_failures++;
        metrics_device_end(d->rec);
        /* the reason in words: what the broker said, or what we refused */
        const MqttAttemptInfo *a = mqtt_client_attempt(d->client);
        char what[400];
        if (why == METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_CERT_VERIFY))
                snprintf(what, sizeof what, "the broker's certificate failed verification: %s",
                         X509_verify_cert_error_string(a->verify_result));
        else if ((why >> 8) == METRIC_REASON_TLS_ALERT)
                snprintf(what, sizeof what, "the broker ended the handshake with TLS alert %s",
                         SSL_alert_desc_string_long(a->alert_received));
        else
                snprintf(what, sizeof what, "%s%s%s", strerror(reason < 0 ? -reason : EPROTO), *ebuf ? ": " : "",
                         ebuf);
        log_dev_warning(d->id, "Connection to %s:%u failed (attempt %u, %s): %s", d->broker->host,
                        d->broker->port, d->failures, why_name, what);
        device_note_error(d, "connect to %s:%u failed: %s: %s", d->broker->host, d->broker->port,
                          why_name, what);
        retry_or_give_up(d);
}

static void on_disconnect(MqttClient *c, bool expected, int reason, void *userdata) {
        Device *d = userdata;

        if (d->power_cut) {
                /* device_power_cut() goes on from here */
                if (d->state == DEVICE_ONLINE || d->state == DEVICE_RESTARTING || d->state == DEVICE_STOPPING) {
                        metrics_disconnected(mb(d), METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_POWER_CUT));
                        rec_disconnected(d);
                }
                return;
        }
        switch (d->state) {
        case DEVICE_RESTARTING:
                metrics_disconnected(mb(d), METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_REQUESTED));
                rec_disconnected(d);
                device_enter_state(d, DEVICE_BOOTING);
                return;
        case DEVICE_STOPPING:
                metrics_disconnected(mb(d), METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_REQUESTED));
                device_enter_state(d, DEVICE_OFF);
                return;
        case DEVICE_CONNECTING:
                attempt_failed(d, reason);
                return;
        case DEVICE_ONLINE: {
                char rbuf[64];
                unsigned why = disconnect_reason(reason < 0 ? reason : -ECONNRESET);
                if (d->drop_reason) {
                        /* device_drop(): the scenario's own doing, not a fault */
                        metrics_disconnected(mb(d), d->drop_reason);
                        rec_disconnected(d);
                        d->failures = 1;
                        break;
                }
                d->failures = 1;
                metrics_disconnected(mb(d), why);
                rec_disconnected(d);
                log_dev_warning(d->id, "Connection to the broker lost: %s", strerror(reason < 0 ? -reason : ECONNRESET));
                device_note_error(d, "connection lost: %s (%s)", strerror(reason < 0 ? -reason : ECONNRESET),
                                  metrics_reason_name(why, rbuf, sizeof rbuf) ?: "other");
                break;
        }
        case DEVICE_OFF:
        case DEVICE_BOOTING:
        case DEVICE_BACKOFF:
        case DEVICE_NO_CONNECT:
        case DEVICE_FAILED:
                return;
        case _DEVICE_STATE_MAX:
        case _DEVICE_STATE_INVALID:
                return;
        }
        retry_or_give_up(d);
}

static void subscribe_all(Device *d) {
        char topic[TOPIC_MAX];
        int qos = (int) cfg(d)->qos;

        /* Broadcast commands as secure_esp has them, plus this device's own. */
        (void) mqtt_client_subscribe(d->client, "/esp/update/#", qos);
        (void) mqtt_client_subscribe(d->client, "/esp/restart", qos);
        snprintf(topic, sizeof topic, "/esp/%s/update/#", d->id);
        (void) mqtt_client_subscribe(d->client, topic, qos);
        snprintf(topic, sizeof topic, "/esp/%s/restart", d->id);
        (void) mqtt_client_subscribe(d->client, topic, qos);
}

/* ---- telemetry ---------------------------------------------------------- */

/* Between two readings: telemetry.rate when set, else telemetry.interval. */
static uint64_t telemetry_period_usec(Device *d) {
        if (cfg(d)->telemetry_rate > 0)
                return MAX((uint64_t) (1e6 / cfg(d)->telemetry_rate), (uint64_t) 1000);
        return (uint64_t) cfg(d)->telemetry_interval_s * 1000000;
}

static int telemetry_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        char topic[TOPIC_MAX], head[128];
        _cleanup_free_ char *payload = NULL;
        Rng *rng = d->ctx->rng;

        if (d->state != DEVICE_ONLINE || !cfg(d)->telemetry_enabled)
                return 0;
        /* An HTU21D-like reading drifting slowly (seeds/003). */
        d->temperature += (rng_double(rng) - 0.5) * 0.4;
        d->humidity += (rng_double(rng) - 0.5) * 1.0;
        d->temperature = fmin(fmax(d->temperature, 10), 35);
        d->humidity = fmin(fmax(d->humidity, 20), 80);
        /* "due": CLOCK_REALTIME µs of when the reading was due, so the probe
         * measures end to end from then (metrics.h: METRIC_TELEMETRY) */
        uint64_t late = device_now(d) > usec ? device_now(d) - usec : 0;
        /* "seq": per boot, from 0, so a subscriber counts what it lost; "ts":
         * CLOCK_REALTIME ms of the publish, for its latency */
        uint64_t real = now_usec(CLOCK_REALTIME);
        int n = snprintf(head, sizeof head,
                         "{\"temperature\":%.2f,\"humidity\":%.2f,\"seq\":%" PRIu32 ",\"ts\":%" PRIu64
                         ",\"due\":%" PRIu64, d->temperature, d->humidity, d->telemetry_seq++, real / 1000,
                         real - late);
        /* telemetry.payload_size: a "pad" field brings the JSON to that size */
        size_t want = MAX((size_t) cfg(d)->telemetry_payload_size, (size_t) n + 1);
        payload = malloc(want + 16);
        if (payload && n > 0) {
                memcpy(payload, head, (size_t) n);
                size_t len = (size_t) n;
                const size_t pad_overhead = strlen(",\"pad\":\"\"}");
                if (want >= len + pad_overhead) {
                        size_t k = want - len - pad_overhead;
                        len += (size_t) sprintf(payload + len, ",\"pad\":\"");
                        memset(payload + len, 'x', k);
                        len += k;
                        payload[len++] = '"';
                }
                payload[len++] = '}';
                if (topic_expand(cfg(d)->telemetry_topic, d->id, topic, sizeof topic) >= 0)
                        (void) device_publish(d, topic, payload, len, (int) cfg(d)->telemetry_qos, false, usec);
        }
        (void) sd_event_source_set_time(s, usec + telemetry_period_usec(d));
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static void telemetry_arm(Device *d, bool on) {
        if (!on || !cfg(d)->telemetry_enabled) {
                if (d->telemetry_timer)
                        (void) sd_event_source_set_enabled(d->telemetry_timer, SD_EVENT_OFF);
                return;
        }
        /* first reading at a random point of the interval: no fleet-wide burst */
        uint64_t first = (uint64_t) (rng_double(d->ctx->rng) * (double) telemetry_period_usec(d)) + 1;
        if (!d->telemetry_timer) {
                if (sd_event_add_time_relative(d->ctx->event, &d->telemetry_timer, CLOCK_MONOTONIC, first,
                                               10000, telemetry_handler, d) < 0)
                        return;
        } else
                (void) sd_event_source_set_time_relative(d->telemetry_timer, first);
        (void) sd_event_source_set_enabled(d->telemetry_timer, SD_EVENT_ONESHOT);
}


/* ---- OTA (esp-formats.md §8, src/ota) ------------------------------------ */

/* Frees the session (if any) and gives the download slot back. */
static void device_ota_end(Device *d) {
        d->ota = ota_session_free(d->ota);
        d->ota_waiting = false;
        if (d->ota_has_slot) {
                d->ota_has_slot = false;
                if (d->ctx->ota_slot_release)
                        d->ctx->ota_slot_release(d->ctx->owner, d);
        }
}

static void device_flash_idle(Device *d) {
        /* An idle device holds no fd for its flash image (fd-budget.h). */
        if (d->fd && !d->ota)
                flash_release_fd(d->fd->flash);
}

static void ota_log(OtaSession *o, char level, const char *tag, const char *message, void *userdata) {
        Device *d = userdata;
        EspLogLevel l = level == 'E' ? ESP_LOG_ERROR : level == 'W' ? ESP_LOG_WARN : ESP_LOG_INFO;

        device_esp_log(d, l, tag, "%s", message);
}

static void ota_event(OtaSession *o, OtaEvent e, int64_t arg, void *userdata) {
        Device *d = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        switch (e) {
        case OTA_EVENT_START:
                d->ota_start_usec = now;
                d->ota_written_usec = 0;
                metrics_count(mb(d), METRIC_OTA_STARTED, 1);
                break;
        case OTA_EVENT_CONNECTED:
                if (d->ota_start_usec)
                        metrics_observe(mb(d), METRIC_OTA_TTFB, now - d->ota_start_usec);
                break;
        case OTA_EVENT_WRITE_FLASH:
                d->ota_written_usec = now; /* the last one is the image complete */
                break;
        case OTA_EVENT_UPDATE_BOOT_PARTITION:
                if (d->ota_written_usec)
                        metrics_observe(mb(d), METRIC_OTA_VERIFY, now - d->ota_written_usec);
                break;
        case OTA_EVENT_GET_IMG_DESC:
        case OTA_EVENT_VERIFY_CHIP_ID:
        case OTA_EVENT_FINISH:
        case OTA_EVENT_ABORT:
        case _OTA_EVENT_MAX:
        case _OTA_EVENT_INVALID:
                break;
        }
}

/* The outcome into the counters and the device's OTA history. */
static void ota_record(Device *d, const OtaOutcome *out) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        metrics_ota_result(mb(d), out->ok ? 0 : out->error);
        metrics_count(mb(d), METRIC_OTA_BYTES, out->bytes);
        if (out->ok && d->ota_start_usec && d->ota_written_usec > d->ota_start_usec) {
                uint64_t t = d->ota_written_usec - d->ota_start_usec;
                metrics_observe(mb(d), METRIC_OTA_DOWNLOAD, t);
                metrics_observe(mb(d), METRIC_OTA_THROUGHPUT, out->bytes * 1000000 / t);
        }
        metrics_device_begin(d->rec);
        MetricsOtaRecord *h = &d->rec->ota_history[d->rec->ota_count % METRICS_OTA_HISTORY];
        h->at_usec = now_usec(CLOCK_REALTIME);
        h->error = out->ok ? 0 : out->error;
        h->duration_ms = d->ota_start_usec ? (uint32_t) MIN((now - d->ota_start_usec) / 1000, (uint64_t) UINT32_MAX) : 0;
        metrics_set_field(h->version, out->new_version ?: "");
        d->rec->ota_count++;
        d->rec->ota_active = 0;
        metrics_device_end(d->rec);
        d->ota_start_usec = d->ota_written_usec = 0;
        if (!out->ok) {
                d->ota_run_usec = 0;
                device_note_error(d, "OTA failed: %s: %s", esp_err_to_name(out->error), out->message ?: "");
        }
}

static void ota_outcome(OtaSession *o, const OtaOutcome *out, void *userdata) {
        Device *d = userdata;

        ota_record(d, out);

        if (out->ok) {
                log_dev_info(d->id, "OTA: %s written to ota_%d (%" PRIu64 " bytes, %u request(s)), rebooting",
                             strna(out->new_version), out->new_slot, out->bytes, out->attempts);
                /* ota-session.h allows freeing the session from its outcome callback */
                device_ota_end(d);
                device_flash_idle(d);
                /* esp_restart() does not wait for the broker: with MQTT down
                 * (BACKOFF) the device reboots at once, and an attempt in
                 * flight (CONNECTING) reboots when it ends */
                if (d->state == DEVICE_ONLINE || d->state == DEVICE_NO_CONNECT)
                        device_enter_state(d, DEVICE_RESTARTING);
                else if (d->state == DEVICE_BACKOFF)
                        device_enter_state(d, DEVICE_BOOTING);
                else if (d->state == DEVICE_CONNECTING)
                        d->reboot_pending = true;
                return;
        }
        log_dev_warning(d->id, "OTA failed: %s (%s) after %u request(s)", out->message ?: "",
                        esp_err_to_name(out->error), out->attempts);
        /* ota-session.h allows freeing the session from its outcome callback;
         * a deferred free would outlive the device if it is freed first */
        device_ota_end(d);
        device_flash_idle(d);
}

static void device_start_ota(Device *d, bool broadcast) {
        const char *url;
        int r;

        if ((d->ota && ota_session_state(d->ota) < OTA_SESSION_DONE) || d->ota_waiting) {
                device_esp_log(d, ESP_LOG_WARN, "secure_esp", "update/run: an update is already running");
                return;
        }
        device_ota_end(d);
        if (!d->ctx->ota_slot_take(d->ctx->owner, d)) {
                /* ota.max_concurrent downloads run already: in line, in arrival order */
                d->ota_waiting = true;
                d->ota_waiting_broadcast = broadcast;
                log_dev_debug(d->id, "OTA queued for a download slot");
                return;
        }
        d->ota_has_slot = true;
        if (d->ota_url_override) {
                url = d->ota_url_override;
        } else if (d->settings.use_url) {
                if (!d->settings.url[0]) {
                        device_esp_log(d, ESP_LOG_ERROR, "secure_esp", "update/run: use_url is 1 but no url is stored");
                        log_dev_warning(d->id, "OTA not started: use_url = 1 but no URL is stored");
                        device_note_error(d, "OTA not started: use_url = 1 but no URL is stored");
                        d->ota_run_usec = 0;
                        device_ota_end(d);
                        return;
                }
                url = d->settings.url;
        } else {
                url = cfg(d)->ota_default_url;
                if (!url || !*url) {
                        device_esp_log(d, ESP_LOG_ERROR, "secure_esp", "update/run: no firmware upgrade URL configured");
                        log_dev_warning(d->id, "OTA not started: ota.default_url is not set and use_url = 0");
                        device_note_error(d, "OTA not started: no URL (ota.default_url unset, use_url = 0)");
                        d->ota_run_usec = 0;
                        device_ota_end(d);
                        return;
                }
        }
        HttpClient *http = d->ctx->http(d->ctx->owner);
        if (!http) {
                device_esp_log(d, ESP_LOG_ERROR, "secure_esp", "update/run: HTTP client unavailable");
                device_ota_end(d);
                return;
        }
        const FleetConfig *fc = fleet_config(d->ctx->fleet);
        OtaSessionOptions o = {
                .url = url,
                .ca_file = d->ctx->ca_path,
                .device_id = d->id,
                .chip_id = streq(fc->chip, "esp32s3") ? ESP_CHIP_ID_ESP32S3 : ESP_CHIP_ID_ESP32C3,
                .allow_equal_version = cfg(d)->ota_allow_equal_version,
                .signed_apps_no_secure_boot = fc->signed_apps_no_secure_boot,
                .start_jitter_usec = broadcast ? (uint64_t) cfg(d)->ota_start_jitter_ms * 1000 : 0,
                .max_retries = cfg(d)->ota_max_retries,
                .retry_base_usec = (uint64_t) cfg(d)->ota_retry_backoff_min_ms * 1000,
                .retry_max_usec = (uint64_t) cfg(d)->ota_retry_backoff_max_ms * 1000,
                .low_speed_limit = cfg(d)->ota_low_speed_limit,
                .low_speed_time_s = cfg(d)->ota_low_speed_time_s,
        };
        OtaSessionCallbacks cb = { .log = ota_log, .event = ota_event, .outcome = ota_outcome };
        r = ota_session_new(d->ctx->event, http, d->fd->flash, d->fd->partitions, d->fd->efuse, &d->boot.app,
                            &o, &cb, d, &d->ota);
        free(d->ota_url_override); /* copied, or not needed any more */
        d->ota_url_override = NULL;
        if (r >= 0) {
                metrics_device_begin(d->rec);
                d->rec->ota_active = 1;
                metrics_device_end(d->rec);
                r = ota_session_start(d->ota);
        }
        if (r < 0) {
                d->rec->ota_active = 0;
                d->ota_run_usec = 0;
                device_note_error(d, "OTA cannot start: %s", esp_err_to_name(r));
                device_ota_end(d);
                device_esp_log(d, ESP_LOG_ERROR, "secure_esp", "update/run: cannot start: %s", esp_err_to_name(r));
                log_dev_error_errno(d->id, r, "OTA: cannot start: %s", esp_err_to_name(r));
        }
}

static int ota_interval_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        bool have_url = d->settings.use_url ? d->settings.url[0] : cfg(d)->ota_default_url && *cfg(d)->ota_default_url;

        /* a periodic check with nowhere to look is quiet (a fleet would warn
         * thousands of times an hour); /esp/update/run still says why */
        if (d->state == DEVICE_ONLINE && have_url)
                device_start_ota(d, false);
        else if (d->state == DEVICE_ONLINE)
                log_dev_debug(d->id, "Periodic OTA check skipped: no URL (use_url = %u)", d->settings.use_url);
        (void) sd_event_source_set_time(s, usec + (uint64_t) d->interval_effective * 1000000);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* secure_esp runs its update routine every `interval` seconds, once the
 * device restarted with an interval set over MQTT. */
static void ota_interval_arm(Device *d, bool on) {
        uint64_t usec = (uint64_t) d->interval_effective * 1000000;

        /* the stored interval, or device.default_interval until one is stored */
        if (!on || d->interval_effective == 0) {
                if (d->ota_timer)
                        (void) sd_event_source_set_enabled(d->ota_timer, SD_EVENT_OFF);
                return;
        }
        if (!d->ota_timer) {
                if (sd_event_add_time_relative(d->ctx->event, &d->ota_timer, CLOCK_MONOTONIC, usec, 1000000,
                                               ota_interval_handler, d) < 0)
                        return;
        } else if (sd_event_source_get_enabled(d->ota_timer, NULL) > 0)
                return; /* already counting */
        else
                (void) sd_event_source_set_time_relative(d->ota_timer, usec);
        (void) sd_event_source_set_enabled(d->ota_timer, SD_EVENT_ONESHOT);
}

/* ---- boot, rollback ------------------------------------------------------ */

static void save_efuse(Device *d) {
        char path[4096];

        snprintf(path, sizeof path, "%s/%s", d->fd->dir, FLEET_DEVICE_EFUSE_FILE);
        int r = efuse_save(d->fd->efuse, path);
        if (r < 0)
                log_dev_error_errno(d->id, r, "Cannot save the eFuse file: %m");
}

static BootOptions boot_options(Device *d) {
        return (BootOptions) {
                .signed_apps_no_secure_boot = fleet_config(d->ctx->fleet)->signed_apps_no_secure_boot,
                .cache = d->ctx->boot_cache,
        };
}

static int confirm_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;
        BootOptions bo = boot_options(d);
        int r;

        if (!d->boot_ok || d->boot.app.ota_state != OTA_IMG_PENDING_VERIFY)
                return 0;
        log_dev_warning(d->id, "App %s did not reach the broker within %u s, rolling back", d->version,
                        cfg(d)->ota_confirm_timeout_s);
        r = boot_mark_app_invalid_rollback(d->fd->flash, d->fd->partitions, d->fd->efuse, &d->boot.app, &bo);
        if (r < 0) {
                log_dev_error_errno(d->id, r, "Rollback refused: %s", esp_err_to_name(r));
                device_queue_esp(d, ESP_LOG_ERROR, "esp_ota_ops", "Rollback failed: %s", esp_err_to_name(r));
                return 0;
        }
        device_queue_esp(d, ESP_LOG_ERROR, "esp_ota_ops", "App %s not confirmed within %u s: marked invalid, rolling back",
                         d->version, cfg(d)->ota_confirm_timeout_s);
        device_enter_state(d, DEVICE_RESTARTING);
        return 0;
}

/* Runs the bootloader (boot.h) as a reset does. 0, or negative when no app boots. */
static int device_boot(Device *d) {
        BootOptions bo = boot_options(d);
        int r;

        boot_result_done(&d->boot);
        d->boot_ok = false;
        r = boot_run(d->fd->flash, d->fd->partitions, d->fd->efuse, &bo, &d->boot);
        for (size_t i = 0; i < d->boot.n_log; i++)
                device_queue_line(d, d->boot.log[i]);
        /* the lines live on in d->pending until they are published */
        for (size_t i = 0; i < d->boot.n_log; i++)
                free(d->boot.log[i]);
        free(d->boot.log);
        d->boot.log = NULL;
        d->boot.n_log = 0;
        if (d->boot.efuse_changed)
                save_efuse(d);
        if (r < 0) {
                device_note_error(d, "no app boots: %s", esp_err_to_name(r));
                return log_dev_error_errno(d->id, r, "No app boots: %s", esp_err_to_name(r));
        }
        d->boot_ok = true;
        snprintf(d->version, sizeof d->version, "%s", d->boot.app.desc.version);
        metrics_device_begin(d->rec);
        metrics_set_field(d->rec->version, d->version);
        if (d->boot.rolled_back)
                d->rec->rollbacks++;
        metrics_device_end(d->rec);
        if (d->boot.rolled_back)
                metrics_count(mb(d), METRIC_ROLLBACKS, 1);
        log_dev_debug(d->id, "Booted %s from ota_%d (%s)%s", d->version, d->boot.app.slot,
                      strna(ota_img_state_to_string(d->boot.app.ota_state)), d->boot.rolled_back ? ", rolled back" : "");
        if (d->boot.rolled_back)
                log_dev_warning(d->id, "Boot fell back to ota_%d (%s)", d->boot.app.slot, d->version);
        if (d->boot.app.ota_state == OTA_IMG_PENDING_VERIFY) {
                uint64_t usec = (uint64_t) cfg(d)->ota_confirm_timeout_s * 1000000;
                if (!d->confirm_timer)
                        r = sd_event_add_time_relative(d->ctx->event, &d->confirm_timer, CLOCK_MONOTONIC, usec,
                                                       100000, confirm_handler, d);
                else
                        r = sd_event_source_set_time_relative(d->confirm_timer, usec);
                if (r >= 0)
                        (void) sd_event_source_set_enabled(d->confirm_timer, SD_EVENT_ONESHOT);
        } else if (d->confirm_timer)
                (void) sd_event_source_set_enabled(d->confirm_timer, SD_EVENT_OFF);
        return 0;
}

static void device_confirm_app(Device *d) {
        bool efuse_changed = false;
        int r;

        if (!d->boot_ok || d->boot.app.ota_state != OTA_IMG_PENDING_VERIFY)
                return;
        r = boot_mark_app_valid(d->fd->flash, d->fd->partitions, d->fd->efuse, &d->boot.app, &efuse_changed);
        if (r < 0) {
                log_dev_error_errno(d->id, r, "Cannot mark the app valid: %s", esp_err_to_name(r));
                return;
        }
        d->boot.app.ota_state = OTA_IMG_VALID;
        if (efuse_changed)
                save_efuse(d);
        if (d->confirm_timer)
                (void) sd_event_source_set_enabled(d->confirm_timer, SD_EVENT_OFF);
        device_esp_log(d, ESP_LOG_INFO, "esp_ota_ops", "App %s marked valid, rollback cancelled", d->version);
        log_dev_info(d->id, "App %s confirmed on the broker: marked valid", d->version);
}

/* ---- states ------------------------------------------------------------- */

static void enter_booting(Device *d) {
        int r;

        d->boot_usec = device_now(d);
        if (d->booted_once) {
                metrics_count(mb(d), METRIC_REBOOTS, 1);
                metrics_device_begin(d->rec);
                d->rec->reboots++;
                metrics_device_end(d->rec);
        }
        d->booted_once = true;
        if (device_load(d) < 0) {
                device_enter_state(d, DEVICE_FAILED);
                return;
        }
        r = settings_load(d->settings_store, &d->settings);
        if (r < 0) {
                log_dev_warning_errno(d->id, r, "Stored settings unreadable (%s), using defaults", esp_err_to_name(r));
                d->settings = (DeviceSettings) {};
        }
        /* secure_esp reads the interval at start-up only. */
        d->interval_effective = d->settings.interval ?: cfg(d)->default_interval_s;
        device_ota_end(d);
        if (device_boot(d) < 0) {
                device_enter_state(d, DEVICE_FAILED);
                return;
        }
        if (!d->client) {
                MqttCallbacks cb = { .on_connect = on_connect, .on_disconnect = on_disconnect,
                                     .on_message = on_message, .on_drained = on_drained,
                                     .on_suback = on_suback, .on_puback = on_puback };
                r = mqtt_client_new(d->ctx->mqtt, d->id, d->broker->ssl_ctx, d->identity.cert, d->identity.key, &cb, d,
                                    &d->client);
                if (r >= 0 && streq(cfg(d)->protocol, "mqttv5"))
                        r = mqtt_client_set_protocol(d->client, 5);
                /* which device said it, on a shared topic too */
                if (r >= 0 && streq(cfg(d)->protocol, "mqttv5"))
                        r = mqtt_client_add_user_property(d->client, "device_id", d->id);
                if (r < 0) {
                        log_dev_error_errno(d->id, r, "Cannot create the MQTT client: %m");
                        device_enter_state(d, DEVICE_FAILED);
                        return;
                }
        }
        char topic[TOPIC_MAX], will[160];
        if (topic_expand(cfg(d)->status_topic, d->id, topic, sizeof topic) >= 0) {
                snprintf(will, sizeof will, "{\"state\":\"offline\",\"version\":\"%s\"}", d->version);
                (void) mqtt_client_set_will(d->client, topic, will, 1, true);
        }
        /* the app is up boot_time_ms after the reset was due */
        uint64_t base = d->start_due_usec ?: d->boot_usec;
        d->start_due_usec = 0;
        device_arm_at(d, base + (uint64_t) cfg(d)->boot_time_ms * 1000);
}

static void start_connect(Device *d) {
        int r;

        d->waiting_slot = false;
        const char *addr = d->broker->resolver ? resolver_next_address(d->broker->resolver) : NULL;
        if (!addr) {
                /* the broker's name is still being resolved */
                d->waiting_slot = true;
                device_arm(d, 100 * 1000);
                return;
        }
        d->broker_addr = addr;
        d->connect_timed_out = false;
        if (!d->connect_due_usec)
                d->connect_due_usec = device_now(d);
        metrics_count(mb(d), METRIC_CONNECT_ATTEMPTS, 1);
        char broker[sizeof d->rec->broker];
        snprintf(broker, sizeof broker, strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr, d->broker->port);
        metrics_device_begin(d->rec);
        metrics_set_field(d->rec->broker, broker);
        metrics_device_end(d->rec);
        r = mqtt_client_connect(d->client, addr, d->broker->port, d->ctx->next_bind_address(d->ctx->owner),
                                cfg(d)->keepalive_s);
        if (r < 0) {
                /* refused at once (no route to this address family; a handshake
                 * that failed inside connect()): as an asynchronous failure,
                 * and the next attempt tries the next address */
                attempt_failed(d, r);
                return;
        }
        device_arm(d, (uint64_t) cfg(d)->connect_timeout_ms * 1000);
}

/* Then a token (the attempt rate), then the attempt. */
static void connecting_with_slot(Device *d) {
        uint64_t wait = token_bucket_reserve(d->ctx->connect_bucket, device_now(d));

        if (wait > 0) {
                d->waiting_slot = true;
                device_arm(d, wait);
                return;
        }
        start_connect(d);
}

static void enter_connecting(Device *d) {
        /* First a slot among the attempts in flight: a broker slower than the
         * offered rate sees fewer attempts at once, instead of each of many
         * waiting until its connect timeout. */
        if (!d->connect_has_slot) {
                if (!d->ctx->connect_slot_take(d->ctx->owner, d)) {
                        d->connect_waiting = true;
                        return;
                }
                d->connect_has_slot = true;
        }
        connecting_with_slot(d);
}

bool device_connect_slot_granted(Device *d) {
        if (!d->connect_waiting || d->state != DEVICE_CONNECTING)
                return false;
        d->connect_waiting = false;
        if (!d->ctx->connect_slot_take(d->ctx->owner, d)) {
                d->connect_waiting = true; /* queued again */
                return false;
        }
        d->connect_has_slot = true;
        connecting_with_slot(d);
        return true;
}

static void enter_online(Device *d) {
        if (d->ota_run_usec && !streq(d->version, d->ota_from_version)) {
                metrics_observe(mb(d), METRIC_OTA_RUN_TO_ONLINE, now_usec(CLOCK_MONOTONIC) - d->ota_run_usec);
                d->ota_run_usec = 0;
        }
        d->failures = 0;
        d->settled = true;
        d->ever_online = true;
        backoff_reset(&d->backoff);
        subscribe_all(d);
        publish_status(d, true);
        device_flush_pending(d);
        device_esp_log(d, ESP_LOG_INFO, "secure_esp", "Running firmware version: %s", d->version);
        device_esp_log(d, ESP_LOG_INFO, "mqtt", "MQTT_EVENT_CONNECTED");
        device_esp_log(d, ESP_LOG_INFO, "secure_esp", "interval=%" PRIu32 " use_url=%u url='%s'",
                       d->interval_effective, d->settings.use_url, d->settings.url);
        device_confirm_app(d);
        telemetry_arm(d, true);
        ota_interval_arm(d, true);
}

static void enter_backoff(Device *d) {
        uint64_t ms = backoff_next_ms(&d->backoff, rng_double(d->ctx->rng));

        log_dev_debug(d->id, "Reconnecting in %" PRIu64 " ms", ms);
        device_arm(d, ms * 1000);
}

static void restart_disconnect(Device *d) {
        if (d->restart_disconnecting)
                return;
        d->restart_disconnecting = true;
        publish_status(d, false);
        /* on_disconnect() moves on to BOOTING */
        (void) mqtt_client_disconnect(d->client);
}

static void enter_restarting(Device *d) {
        telemetry_arm(d, false);
        ota_interval_arm(d, false);
        d->restart_disconnecting = false;
        if (!d->client || !mqtt_client_is_connected(d->client)) {
                device_enter_state(d, DEVICE_BOOTING);
                return;
        }
        /* The last lines before a reboot ("upgrade successful", "Restarting
         * now") are the ones an operator wants most: wait until the broker has
         * acknowledged them (on_drained), for RESTART_DRAIN_USEC at most. A
         * QoS 1 PUBACK still in flight when the socket closes also makes
         * mosquitto drop what it has not read yet (mosquitto#3253). */
        if (mqtt_client_unacked(d->client) > 0) {
                device_arm(d, RESTART_DRAIN_USEC);
                return;
        }
        restart_disconnect(d);
}

static void enter_stopping(Device *d) {
        telemetry_arm(d, false);
        ota_interval_arm(d, false);
        device_ota_end(d);
        if (d->confirm_timer)
                (void) sd_event_source_set_enabled(d->confirm_timer, SD_EVENT_OFF);
        if (!d->client || !mqtt_client_is_connected(d->client)) {
                if (d->client)
                        mqtt_client_abort(d->client);
                device_enter_state(d, DEVICE_OFF);
                return;
        }
        publish_status(d, false);
        device_arm(d, 5 * 1000000); /* a broker that never answers must not block shutdown */
        (void) mqtt_client_disconnect(d->client);
}

/* The one transition funnel. A transition that triggers another (a
 * synchronous callback, a failure inside enter_*()) does not recurse: the
 * next state is queued and applied once the current one is done, so every
 * enter_*() runs to its end with d->state being its own state. */
static void device_apply_state(Device *d, DeviceState s);

static void device_enter_state(Device *d, DeviceState s) {
        if (d->in_transition) {
                d->queued_state = s;
                d->has_queued_state = true;
                return;
        }
        d->in_transition = true;
        for (;;) {
                device_apply_state(d, s);
                if (!d->has_queued_state)
                        break;
                s = d->queued_state;
                d->has_queued_state = false;
        }
        d->in_transition = false;
}

static void device_apply_state(Device *d, DeviceState s) {
        DeviceState old = d->state;

        if (old == DEVICE_CONNECTING && s != DEVICE_CONNECTING) {
                /* the attempt is over (online, failed, stopped): its slot is free */
                d->connect_waiting = false;
                if (d->connect_has_slot) {
                        d->connect_has_slot = false;
                        d->ctx->connect_slot_release(d->ctx->owner, d);
                }
        }

        if (old != s)
                log_dev_debug(d->id, "%s -> %s", device_state_to_string(old), device_state_to_string(s));
        d->state = s;
        if (old != s) {
                metrics_device_begin(d->rec);
                d->rec->state = (uint8_t) s;
                d->rec->state_since_usec = now_usec(CLOCK_REALTIME);
                metrics_device_end(d->rec);
        }
        if (s != DEVICE_CONNECTING)
                d->connect_due_usec = 0;
        device_disarm(d);

        if (d->reboot_pending && (s == DEVICE_ONLINE || s == DEVICE_BACKOFF)) {
                /* the new image waits: restart now (online: say goodbye first) */
                d->reboot_pending = false;
                device_enter_state(d, s == DEVICE_ONLINE ? DEVICE_RESTARTING : DEVICE_BOOTING);
        } else if (s == DEVICE_BOOTING || s == DEVICE_OFF || s == DEVICE_STOPPING)
                d->reboot_pending = false;

        switch (s) {
        case DEVICE_OFF:
                telemetry_arm(d, false);
                break;
        case DEVICE_BOOTING:
                telemetry_arm(d, false);
                d->telemetry_seq = 0;
                enter_booting(d);
                break;
        case DEVICE_CONNECTING:
                enter_connecting(d);
                break;
        case DEVICE_ONLINE:
                enter_online(d);
                break;
        case DEVICE_BACKOFF:
                telemetry_arm(d, false);
                enter_backoff(d);
                break;
        case DEVICE_RESTARTING:
                enter_restarting(d);
                break;
        case DEVICE_NO_CONNECT:
        case DEVICE_FAILED:
                telemetry_arm(d, false);
                d->settled = true;
                break;
        case DEVICE_STOPPING:
                enter_stopping(d);
                break;
        case _DEVICE_STATE_MAX:
        case _DEVICE_STATE_INVALID:
                break;
        }
        device_flash_idle(d);
        if (old != s && d->ctx->state_changed)
                d->ctx->state_changed(d->ctx->owner, d, old, s);
}

static int device_timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Device *d = userdata;

        switch (d->state) {
        case DEVICE_BOOTING:
                if (d->boot.app.behaviour == APP_BEHAVIOUR_NO_CONNECT) {
                        log_dev_warning(d->id, "Running %s, a no-connect firmware: it never reaches the broker", d->version);
                        device_enter_state(d, DEVICE_NO_CONNECT);
                        break;
                }
                d->connect_due_usec = usec;
                device_enter_state(d, DEVICE_CONNECTING);
                break;
        case DEVICE_BACKOFF:
                d->connect_due_usec = usec;
                device_enter_state(d, DEVICE_CONNECTING);
                break;
        case DEVICE_CONNECTING:
                if (d->waiting_slot) {
                        start_connect(d);
                        break;
                }
                log_dev_warning(d->id, "Connecting to %s:%u timed out after %u ms", d->broker->host,
                                d->broker->port, cfg(d)->connect_timeout_ms);
                d->connect_timed_out = true;
                mqtt_client_abort(d->client); /* -> on_disconnect -> BACKOFF */
                break;
        case DEVICE_STOPPING:
                mqtt_client_abort(d->client);
                if (d->state == DEVICE_STOPPING)
                        device_enter_state(d, DEVICE_OFF);
                break;
        case DEVICE_RESTARTING:
                restart_disconnect(d); /* the broker did not acknowledge in time */
                break;
        case DEVICE_OFF:
        case DEVICE_ONLINE:
        case DEVICE_NO_CONNECT:
        case DEVICE_FAILED:
                break;
        case _DEVICE_STATE_MAX:
        case _DEVICE_STATE_INVALID:
                break;
        }
        return 0;
}

/* ---- object ------------------------------------------------------------- */

int device_new(const DeviceContext *ctx, const FleetDeviceEntry *e, MetricsDevice *rec, Device **ret) {
        Device *d = calloc(1, sizeof *d);

        if (!d)
                return -ENOMEM;
        d->ctx = ctx;
        d->rec = rec;
        metrics_device_begin(rec);
        metrics_set_field(rec->id, e->id);
        rec->state = DEVICE_OFF;
        rec->state_since_usec = now_usec(CLOCK_REALTIME);
        rec->ota_active = 0;
        metrics_device_end(rec);
        d->index = e->index;
        snprintf(d->id, sizeof d->id, "%s", e->id);
        /* by manifest index, so a device keeps its broker whatever worker runs it */
        d->broker = &ctx->brokers[e->index % ctx->n_brokers];
        d->state = DEVICE_OFF;
        backoff_init(&d->backoff, ctx->config->backoff_min_ms, ctx->config->backoff_max_ms,
                     ctx->config->backoff_jitter);
        d->temperature = 18 + rng_double(ctx->rng) * 8;
        d->humidity = 35 + rng_double(ctx->rng) * 20;
        *ret = d;
        return 0;
}

Device *device_free(Device *d) {
        if (!d)
                return NULL;
        sd_event_source_disable_unref(d->timer);
        sd_event_source_disable_unref(d->telemetry_timer);
        sd_event_source_disable_unref(d->confirm_timer);
        sd_event_source_disable_unref(d->ota_timer);
        d->ota = ota_session_free(d->ota); /* the manager frees its slots itself */
        boot_result_done(&d->boot);
        for (size_t i = 0; i < d->n_pending; i++)
                free(d->pending[i]);
        free(d->pending);
        mqtt_client_free(d->client);
        free(d->ota_url_override);
        device_identity_done(&d->identity);
        settings_store_close(d->settings_store);
        fleet_device_free(d->fd);
        free(d);
        return NULL;
}

void device_start(Device *d, uint64_t due_usec) {
        if (d->state != DEVICE_OFF)
                return;
        d->start_due_usec = due_usec;
        device_enter_state(d, DEVICE_BOOTING);
}

void device_restart(Device *d) {
        switch (d->state) {
        case DEVICE_ONLINE:
                device_esp_log(d, ESP_LOG_INFO, "secure_esp", "restart: Restarting now");
                log_dev_info(d->id, "Restart requested by the operator");
                device_enter_state(d, DEVICE_RESTARTING);
                break;
        case DEVICE_BOOTING:
        case DEVICE_CONNECTING:
        case DEVICE_BACKOFF:
        case DEVICE_NO_CONNECT:
        case DEVICE_FAILED:
                log_dev_info(d->id, "Restart requested by the operator");
                /* an attempt in flight ends with the reset: not a failed connection */
                d->power_cut = true;
                if (d->client)
                        mqtt_client_abort(d->client);
                d->power_cut = false;
                device_enter_state(d, DEVICE_BOOTING);
                break;
        case DEVICE_OFF:
        case DEVICE_RESTARTING:
        case DEVICE_STOPPING:
        case _DEVICE_STATE_MAX:
        case _DEVICE_STATE_INVALID:
                break;
        }
}

void device_power_cut(Device *d) {
        if (d->state == DEVICE_OFF || d->state == DEVICE_STOPPING)
                return;
        log_dev_info(d->id, "Power cut");
        telemetry_arm(d, false);
        ota_interval_arm(d, false);
        if (d->ota) {
                /* the download dies with the power: the partial image stays unbootable */
                metrics_ota_result(mb(d), -ESP_FAIL_CODE);
                device_note_error(d, "power cut during OTA");
        }
        device_ota_end(d);
        d->ota_run_usec = 0;
        /* no goodbye: the broker publishes the will */
        d->power_cut = true;
        if (d->client)
                mqtt_client_abort(d->client);
        d->power_cut = false;
        device_enter_state(d, DEVICE_BOOTING);
}

void device_drop(Device *d, unsigned reason) {
        if (d->state != DEVICE_ONLINE || !d->client)
                return;
        log_dev_debug(d->id, "Connection dropped (%s)", reason == METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_STORM)
                      ? "storm" : "churn");
        d->drop_reason = reason;
        mqtt_client_abort(d->client); /* -> on_disconnect -> BACKOFF */
        d->drop_reason = 0;
}

void device_ota_now(Device *d, const char *url) {
        if (d->state != DEVICE_ONLINE && d->state != DEVICE_NO_CONNECT) {
                log_dev_info(d->id, "OTA requested by the operator, but the device is %s: ignoring",
                             device_state_to_string(d->state));
                return;
        }
        free(d->ota_url_override);
        d->ota_url_override = url ? strdup(url) : NULL;
        log_dev_info(d->id, "OTA requested by the operator%s%s", url ? " from " : "", url ?: "");
        if (!d->ota_run_usec) {
                d->ota_run_usec = now_usec(CLOCK_MONOTONIC);
                snprintf(d->ota_from_version, sizeof d->ota_from_version, "%s", d->version);
        }
        device_start_ota(d, false);
}

void device_stop(Device *d) {
        if (d->state != DEVICE_OFF)
                device_enter_state(d, DEVICE_STOPPING);
}

void device_reload(Device *d) {
        backoff_init(&d->backoff, cfg(d)->backoff_min_ms, cfg(d)->backoff_max_ms, cfg(d)->backoff_jitter);
        if (d->state == DEVICE_ONLINE)
                telemetry_arm(d, cfg(d)->telemetry_enabled);
}

bool device_ota_slot_granted(Device *d) {
        if (!d->ota_waiting || d->state != DEVICE_ONLINE) {
                d->ota_waiting = false;
                return false;
        }
        d->ota_waiting = false;
        device_start_ota(d, d->ota_waiting_broadcast);
        return d->ota_has_slot;
}

DeviceState device_get_state(const Device *d) {
        return d->state;
}

const char *device_get_id(const Device *d) {
        return d->id;
}

bool device_settled(const Device *d) {
        return d->settled;
}

uint64_t device_msgs_in(const Device *d) {
        return d->client ? mqtt_client_msgs_in(d->client) : 0;
}

uint64_t device_msgs_out(const Device *d) {
        return d->client ? mqtt_client_msgs_out(d->client) : 0;
}
