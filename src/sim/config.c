/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <arpa/inet.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <syslog.h>

#include "basic/parse-util.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/string-table.h"
#include "fleet/shard.h"
#include "sim/config.h"
#include "sim/fd-budget.h"
#include "sim/ramp.h"

static const char *const tls_version_table[_TLS_VERSION_MAX] = {
        [TLS_VERSION_1_2] = "tlsv1.2",
        [TLS_VERSION_1_3] = "tlsv1.3",
};
DEFINE_STRING_TABLE_LOOKUP(tls_version, TlsVersion);

static const struct {
        const char *name;
        int level;
} log_levels[] = {
        { "err", LOG_ERR },         { "error", LOG_ERR },  { "warning", LOG_WARNING },
        { "notice", LOG_NOTICE },   { "info", LOG_INFO },  { "debug", LOG_DEBUG },
};

int log_level_from_string(const char *s) {
        for (size_t i = 0; s && i < ELEMENTSOF(log_levels); i++)
                if (streq(log_levels[i].name, s))
                        return log_levels[i].level;
        return -EINVAL;
}

typedef enum ConfigType {
        CONFIG_STRING,          /* char *, checked by .check */
        CONFIG_UINT,            /* unsigned, in [min, max] */
        CONFIG_DOUBLE,          /* double, in [min, max]; an integer is accepted */
        CONFIG_BOOL,            /* bool */
        CONFIG_STRV,            /* char ** (NULL-terminated), each checked by .check */
        CONFIG_TLS_VERSION,     /* TlsVersion, from its string table */
} ConfigType;

typedef int (*ConfigCheck)(const char *value, char *reason, size_t n);

typedef struct ConfigItem {
        const char *path;       /* "group.key" */
        ConfigType type;
        size_t offset;          /* into DaemonConfig */
        const char *def;        /* default, as text (strings unquoted, lists comma-separated) */
        double min, max;        /* numbers */
        ConfigCheck check;      /* strings */
        bool live;              /* applied on SIGHUP; false = needs a restart */
        const char *comment;    /* one line, for the sample config */
} ConfigItem;

static int check_nonempty(const char *v, char *reason, size_t n) {
        if (!*v) {
                snprintf(reason, n, "must not be empty");
                return -EINVAL;
        }
        return 0;
}

/* A topic template: a topic name with at most one "%s" (the device id), no
 * other conversion and no wildcard (a device publishes there). */
static int check_topic_template(const char *v, char *reason, size_t n) {
        unsigned n_s = 0;

        if (v[0] != '/') {
                snprintf(reason, n, "'%s' must start with '/'", v);
                return -EINVAL;
        }
        if (strlen(v) > 200) {
                snprintf(reason, n, "longer than 200 bytes");
                return -EINVAL;
        }
        for (const char *p = v; *p; p++) {
                if (*p == '+' || *p == '#') {
                        snprintf(reason, n, "'%s' contains the MQTT wildcard '%c'", v, *p);
                        return -EINVAL;
                }
                if (*p != '%')
                        continue;
                if (p[1] != 's') {
                        snprintf(reason, n, "'%s': only one %%s (the device id) is allowed", v);
                        return -EINVAL;
                }
                n_s++;
                p++;
        }
        if (n_s > 1) {
                snprintf(reason, n, "'%s': only one %%s (the device id) is allowed", v);
                return -EINVAL;
        }
        return 0;
}

static int check_https_url_or_empty(const char *v, char *reason, size_t n) {
        if (!*v)
                return 0;
        if (!strneq(v, "https://", 8) || !v[8]) {
                snprintf(reason, n, "'%s' is not an https:// URL", v);
                return -EINVAL;
        }
        if (strlen(v) > 255) {
                snprintf(reason, n, "longer than 255 bytes");
                return -EINVAL;
        }
        return 0;
}

static int check_ip_address(const char *v, char *reason, size_t n) {
        unsigned char buf[sizeof(struct in6_addr)];

        if (inet_pton(AF_INET, v, buf) == 1 || inet_pton(AF_INET6, v, buf) == 1)
                return 0;
        snprintf(reason, n, "'%s' is not an IPv4 or IPv6 address", v);
        return -EINVAL;
}

int broker_endpoint_parse(const char *s, unsigned default_port, char *host, size_t hostlen, unsigned *ret_port) {
        const char *colon = strrchr(s, ':'), *h = s;
        size_t hl = strlen(s);
        unsigned port = default_port;

        if (s[0] == '[') {
                /* [v6]:port or [v6] */
                const char *close = strchr(s, ']');
                if (!close || close == s + 1 || (close[1] && close[1] != ':'))
                        return -EINVAL;
                h = s + 1;
                hl = (size_t) (close - h);
                colon = close[1] == ':' ? close + 1 : NULL;
        } else if (colon && strchr(s, ':') != colon)
                colon = NULL;           /* a bare IPv6 address: no port */
        else if (colon)
                hl = (size_t) (colon - s);
        if (colon) {
                uint32_t v;
                if (safe_atou32(colon + 1, 10, &v) < 0 || v < 1 || v > 65535)
                        return -ERANGE;
                port = v;
        }
        if (hl == 0 || hl >= hostlen || memchr(h, ' ', hl) || memchr(h, '/', hl))
                return -EINVAL;
        memcpy(host, h, hl);
        host[hl] = 0;
        *ret_port = port;
        return 0;
}

static int check_broker_endpoint(const char *v, char *reason, size_t n) {
        char host[256];
        unsigned port;
        int r = broker_endpoint_parse(v, 8883, host, sizeof host, &port);

        if (r == -ERANGE)
                snprintf(reason, n, "'%s': the port is not a number from 1 to 65535", v);
        else if (r < 0)
                snprintf(reason, n, "'%s' is not HOST, HOST:PORT or [IPV6]:PORT", v);
        return r;
}

static int check_log_level(const char *v, char *reason, size_t n) {
        if (log_level_from_string(v) >= 0)
                return 0;
        snprintf(reason, n, "'%s' is not one of err, warning, notice, info, debug", v);
        return -EINVAL;
}

static int check_debug_topics(const char *v, char *reason, size_t n) {
        const char *p = v;

        while (*p) {
                size_t len = strcspn(p, ", ");
                if (len > 0) {
                        char word[32];
                        if (len >= sizeof word) {
                                snprintf(reason, n, "unknown log topic in '%s'", v);
                                return -EINVAL;
                        }
                        memcpy(word, p, len);
                        word[len] = 0;
                        if (!streq(word, "all") && log_topic_from_string(word) < 0) {
                                snprintf(reason, n, "unknown log topic '%s' (known: main, sim, mqtt, http, ota, nvs, flash, dsemu, image, all)", word);
                                return -EINVAL;
                        }
                }
                p += len;
                p += strspn(p, ", ");
        }
        return 0;
}

/* "" (off) or "ADDRESS:PORT" with a numeric address ("[::1]:9464" for IPv6). */
static int check_listen_or_empty(const char *v, char *reason, size_t n) {
        char host[64];
        unsigned port;

        if (!*v)
                return 0;
        if (config_parse_listen(v, host, sizeof host, &port) < 0) {
                snprintf(reason, n, "'%s' is not ADDRESS:PORT with a numeric address and a port 1..65535", v);
                return -EINVAL;
        }
        return 0;
}

static int check_path_or_empty(const char *v, char *reason, size_t n) {
        if (*v && *v != '/') {
                snprintf(reason, n, "'%s' is not an absolute path", v);
                return -EINVAL;
        }
        return 0;
}

int config_parse_listen(const char *v, char *host, size_t size, unsigned *ret_port) {
        const char *colon;
        unsigned char buf[16];
        char *end;

        if (*v == '[') {
                const char *close = strchr(v, ']');
                if (!close || close[1] != ':' || (size_t) (close - v - 1) >= size)
                        return -EINVAL;
                memcpy(host, v + 1, (size_t) (close - v - 1));
                host[close - v - 1] = 0;
                colon = close + 1;
                if (inet_pton(AF_INET6, host, buf) != 1)
                        return -EINVAL;
        } else {
                colon = strrchr(v, ':');
                if (!colon || (size_t) (colon - v) >= size)
                        return -EINVAL;
                memcpy(host, v, (size_t) (colon - v));
                host[colon - v] = 0;
                if (inet_pton(AF_INET, host, buf) != 1)
                        return -EINVAL;
        }
        errno = 0;
        unsigned long p = strtoul(colon + 1, &end, 10);
        if (errno || *end || end == colon + 1 || p == 0 || p > 65535)
                return -EINVAL;
        *ret_port = (unsigned) p;
        return 0;
}

static int check_ramp_profile(const char *v, char *reason, size_t n) {
        if (ramp_profile_from_string(v) < 0) {
                snprintf(reason, n, "'%s' is not a ramp profile (linear, steps or poisson)", v);
                return -EINVAL;
        }
        return 0;
}

static int check_protocol(const char *v, char *reason, size_t n) {
        if (!streq(v, "mqttv311") && !streq(v, "mqttv5")) {
                snprintf(reason, n, "'%s' is not a protocol (mqttv311 or mqttv5)", v);
                return -EINVAL;
        }
        return 0;
}

static int check_shard(const char *v, char *reason, size_t n) {
        Shard sh;

        if (*v && shard_from_string(v, &sh) < 0) {
                snprintf(reason, n, "'%s' is not a shard: I/N with 0 <= I < N <= %u, or \"\"", v, SHARD_COUNT_MAX);
                return -EINVAL;
        }
        return 0;
}

#define F(field) offsetof(DaemonConfig, field)

/* The one place every key, its type, range and default live. */
static const ConfigItem config_items[] = {
        { "fleet_dir", CONFIG_STRING, F(fleet_dir), "/var/lib/espfleet/fleet", .check = check_nonempty,
          .comment = "fleet directory made by `espfleet provision`" },
        { "first_device", CONFIG_UINT, F(first_device), "0", 0, 0x7fffffff,
          .comment = "manifest index of the first device this daemon runs" },
        { "device_count", CONFIG_UINT, F(device_count), "0", 0, 1000000,
          .comment = "number of devices to run; 0 = every device from first_device on" },
        { "shard", CONFIG_STRING, F(shard), "", .check = check_shard,
          .comment = "\"I/N\": run only the I-th of N equal slices of the fleet, by index (instead of first_device and device_count)" },
        { "workers", CONFIG_UINT, F(workers), "0", 0, 64,
          .comment = "worker processes, each with its own event loop; 0 = one per devices_per_worker devices" },
        { "devices_per_worker", CONFIG_UINT, F(devices_per_worker_max), "0", 0, 1000000,
          .comment = "devices per worker when workers = 0; 0 = as many as the open-file limit allows (1 fd each)" },
        { "worker_watchdog", CONFIG_UINT, F(worker_watchdog_s), "30", 2, 3600, .live = true,
          .comment = "seconds without a report (workers report every second) before a hung worker is killed and restarted" },

        { "broker.host", CONFIG_STRING, F(broker_host), "localhost", .check = check_nonempty,
          .comment = "MQTT broker; this name is also checked against the broker's certificate" },
        { "broker.port", CONFIG_UINT, F(broker_port), "8883", 1, 65535, .comment = "MQTT over TLS port" },
        { "broker.hosts", CONFIG_STRV, F(broker_hosts), "", .check = check_broker_endpoint,
          .comment = "several brokers, e.g. [\"mqtt-a:8883\", \"mqtt-b:8884\"] (a cluster): device INDEX connects to "
                     "entry INDEX mod N, each name checked against that broker's certificate; empty = broker.host "
                     "and broker.port" },
        { "broker.bind_addresses", CONFIG_STRV, F(bind_addresses), "", .check = check_ip_address,
          .comment = "source addresses used round-robin, e.g. [\"127.0.0.1\", \"127.0.0.2\"], to pass ~28k connections" },
        { "broker.keepalive", CONFIG_UINT, F(keepalive_s), "60", 5, 65535, .comment = "MQTT keepalive in seconds" },
        { "broker.tls_version_min", CONFIG_TLS_VERSION, F(tls_version_min), "tlsv1.2",
          .comment = "lowest TLS version offered: \"tlsv1.2\" or \"tlsv1.3\"" },
        { "broker.qos", CONFIG_UINT, F(qos), "1", 0, 2, .comment = "QoS of the command subscriptions and of device publishes" },
        { "broker.protocol", CONFIG_STRING, F(protocol), "mqttv311", .check = check_protocol,
          .comment = "MQTT version the devices speak: \"mqttv311\" (as secure_esp) or \"mqttv5\"" },

        { "ramp.rate", CONFIG_DOUBLE, F(ramp_rate), "100", 0.01, 100000, .live = true,
          .comment = "devices started per second at daemon start (across all workers)" },
        { "ramp.jitter", CONFIG_DOUBLE, F(ramp_jitter), "0.5", 0, 1, .live = true,
          .comment = "fraction of each start slot spread at random (0 = a strict metronome)" },

        { "reconnect.backoff_min_ms", CONFIG_UINT, F(backoff_min_ms), "1000", 10, 3600000, .live = true,
          .comment = "first reconnect delay after a lost or failed connection" },
        { "reconnect.backoff_max_ms", CONFIG_UINT, F(backoff_max_ms), "60000", 10, 3600000, .live = true,
          .comment = "the delay doubles per failed attempt up to this" },
        { "reconnect.jitter", CONFIG_DOUBLE, F(backoff_jitter), "0.5", 0, 1, .live = true,
          .comment = "fraction of each delay drawn at random" },
        { "reconnect.connect_rate_max", CONFIG_DOUBLE, F(connect_rate_max), "200", 0.1, 100000, .live = true,
          .comment = "fleet-wide cap on connection attempts per second (token bucket): no reconnect storm" },
        { "reconnect.connect_inflight_max", CONFIG_UINT, F(connect_inflight_max), "64", 1, 100000, .live = true,
          .comment = "fleet-wide cap on attempts in flight (TCP + TLS + CONNACK); keep it below the broker's listen backlog (mosquitto: 100)" },
        { "reconnect.connect_timeout_ms", CONFIG_UINT, F(connect_timeout_ms), "30000", 100, 600000, .live = true,
          .comment = "TCP + TLS + CONNACK must complete within this" },
        { "reconnect.give_up_after", CONFIG_UINT, F(give_up_after), "0", 0, 1000000, .live = true,
          .comment = "consecutive failed attempts before a device is marked failed; 0 = retry forever" },

        { "device.boot_time_ms", CONFIG_UINT, F(boot_time_ms), "1500", 0, 600000, .live = true,
          .comment = "time from a reset (start, /esp/restart) to the first connection attempt" },
        { "device.log_topic", CONFIG_STRING, F(log_topic), "/esp/%s/log", .check = check_topic_template, .live = true,
          .comment = "device log topic, %s = device id; \"/esp/log\" is the secure_esp seed's shared topic" },
        { "device.log_id_prefix", CONFIG_BOOL, F(log_id_prefix), "false", .live = true,
          .comment = "put \"[<device id>] \" before each log-topic line, to tell devices apart on a shared topic "
                     "(under MQTT 5 every publish also carries the user property device_id)" },
        { "device.status_topic", CONFIG_STRING, F(status_topic), "/esp/%s/status", .check = check_topic_template, .live = true,
          .comment = "retained status (online/offline via will, running version)" },
        { "device.default_interval", CONFIG_UINT, F(default_interval_s), "3600", 1, 9999999,
          .comment = "OTA check interval in seconds until /esp/update/interval sets one" },

        { "telemetry.enabled", CONFIG_BOOL, F(telemetry_enabled), "false", .live = true,
          .comment = "publish a periodic JSON reading (temperature, humidity) per device" },
        { "telemetry.interval", CONFIG_UINT, F(telemetry_interval_s), "60", 1, 86400, .live = true,
          .comment = "seconds between two telemetry readings of one device" },
        { "telemetry.topic", CONFIG_STRING, F(telemetry_topic), "/esp/%s/telemetry", .check = check_topic_template, .live = true,
          .comment = "telemetry topic, %s = device id" },
        { "telemetry.qos", CONFIG_UINT, F(telemetry_qos), "0", 0, 1, .live = true,
          .comment = "QoS of telemetry publishes (1: each PUBACK is timed, espfleet_puback_seconds)" },
        { "telemetry.rate", CONFIG_DOUBLE, F(telemetry_rate), "0", 0, 1000, .live = true,
          .comment = "readings per second per device (may be below 1); 0 = one every telemetry.interval seconds" },
        { "telemetry.payload_size", CONFIG_UINT, F(telemetry_payload_size), "0", 0, 65536, .live = true,
          .comment = "pad each reading's JSON to this many bytes (a \"pad\" field); 0 = no padding" },

        { "ota.default_url", CONFIG_STRING, F(ota_default_url), "", .check = check_https_url_or_empty, .live = true,
          .comment = "firmware URL when use_url = 0 (CONFIG_EXAMPLE_FIRMWARE_UPGRADE_URL)" },
        { "ota.max_concurrent", CONFIG_UINT, F(ota_max_concurrent), "256", 1, 4096,
          .comment = "downloads running at a time in each worker; the others wait in arrival order (2 fds each)" },
        { "ota.allow_equal_version", CONFIG_BOOL, F(ota_allow_equal_version), "false", .live = true,
          .comment = "accept an image whose version equals the running one (tests only)" },
        { "ota.start_jitter_ms", CONFIG_UINT, F(ota_start_jitter_ms), "0", 0, 3600000, .live = true,
          .comment = "a broadcast /esp/update/run starts each device at random within this window" },
        { "ota.confirm_timeout", CONFIG_UINT, F(ota_confirm_timeout_s), "60", 1, 86400, .live = true,
          .comment = "seconds a new image has to reach the broker before it is rolled back" },
        { "ota.max_retries", CONFIG_UINT, F(ota_max_retries), "3", 0, 1000, .live = true,
          .comment = "requests after a failed one, for transient failures only (connection, 5xx, 408, 429, cut body)" },
        { "ota.retry_backoff_min_ms", CONFIG_UINT, F(ota_retry_backoff_min_ms), "1000", 10, 3600000, .live = true,
          .comment = "first delay before an OTA retry; it doubles per retry" },
        { "ota.retry_backoff_max_ms", CONFIG_UINT, F(ota_retry_backoff_max_ms), "60000", 10, 3600000, .live = true,
          .comment = "cap of the OTA retry delay, and of a server's Retry-After" },
        { "ota.low_speed_limit", CONFIG_UINT, F(ota_low_speed_limit), "1", 1, 1000000000, .live = true,
          .comment = "bytes/s below which a download counts as stalled" },
        { "ota.low_speed_time", CONFIG_UINT, F(ota_low_speed_time_s), "30", 1, 3600, .live = true,
          .comment = "seconds below low_speed_limit before a stalled download is dropped (and retried)" },

        { "scenario.ramp.profile", CONFIG_STRING, F(ramp_profile), "linear", .check = check_ramp_profile,
          .comment = "how the start is spread: \"linear\" (ramp.rate, ramp.jitter), \"steps\" or \"poisson\" (random arrivals at ramp.rate)" },
        { "scenario.ramp.step_size", CONFIG_UINT, F(ramp_step_size), "100", 1, 1000000,
          .comment = "steps: devices started at once, fleet-wide" },
        { "scenario.ramp.step_interval", CONFIG_DOUBLE, F(ramp_step_interval_s), "10", 0.001, 86400,
          .comment = "steps: seconds between two steps" },
        { "scenario.hold", CONFIG_UINT, F(scenario_hold_s), "0", 0, 100000000,
          .comment = "seconds to hold once the initial ramp is done, then stop cleanly (reports, pass_if); 0 = run until stopped" },
        { "scenario.churn.rate", CONFIG_DOUBLE, F(churn_rate), "0", 0, 100000, .live = true,
          .comment = "fleet-wide disconnects per second of random online devices, each reconnecting after its backoff" },
        { "scenario.storm.at", CONFIG_UINT, F(storm_at_s), "0", 0, 100000000,
          .comment = "seconds after start when every connection drops at once (a reconnect storm); 0 = none" },
        { "scenario.storm.every", CONFIG_UINT, F(storm_every_s), "0", 0, 100000000,
          .comment = "repeat the storm every this many seconds; 0 = once" },
        { "scenario.pass_if.online_min_percent", CONFIG_DOUBLE, F(pass_online_min_percent), "-1", -1, 100,
          .comment = "at the end, at least this % of the devices online; -1 = no check (exit status 3 when a check fails)" },
        { "scenario.pass_if.connect_p99_max_ms", CONFIG_DOUBLE, F(pass_connect_p99_max_ms), "-1", -1, 1e9,
          .comment = "p99 of connection due -> CONNACK at most this many ms; -1 = no check" },
        { "scenario.pass_if.connack_p99_max_ms", CONFIG_DOUBLE, F(pass_connack_p99_max_ms), "-1", -1, 1e9,
          .comment = "p99 of CONNECT -> CONNACK at most this many ms; -1 = no check" },
        { "scenario.pass_if.ota_failures_max", CONFIG_DOUBLE, F(pass_ota_failures_max), "-1", -1, 1e9,
          .comment = "at most this many failed OTA outcomes; -1 = no check" },

        { "metrics.record", CONFIG_BOOL, F(metrics_record), "true",
          .comment = "record latency histograms and counters (false: only states and device records, for bench/instruments.sh)" },
        { "metrics.listen", CONFIG_STRING, F(metrics_listen), "", .check = check_listen_or_empty,
          .comment = "Prometheus metrics on http://ADDRESS:PORT/metrics, e.g. \"127.0.0.1:9464\"; \"\" = off" },
        { "control.socket", CONFIG_STRING, F(control_socket), "", .check = check_path_or_empty,
          .comment = "control socket (espfleet status/top); \"\" = $RUNTIME_DIRECTORY/control, else /run/espfleet/control (root), $XDG_RUNTIME_DIR/espfleet/control, or /tmp/espfleet-$UID/control" },
        { "probe.enabled", CONFIG_BOOL, F(probe_enabled), "false",
          .comment = "run a probe subscriber that times commands (to the device's next log line) and telemetry end to end" },
        { "probe.cert", CONFIG_STRING, F(probe_cert), "", .check = check_path_or_empty,
          .comment = "the probe's client certificate (PEM); it needs read access to the device topics, e.g. PKI/operator.crt" },
        { "probe.key", CONFIG_STRING, F(probe_key), "", .check = check_path_or_empty,
          .comment = "the probe's private key (PEM, mode 0600), kept outside the fleet directory" },

        { "log.level", CONFIG_STRING, F(log_level), "info", .check = check_log_level, .live = true,
          .comment = "daemon log level: err, warning, notice, info or debug" },
        { "log.debug_topics", CONFIG_STRING, F(debug_topics), "", .check = check_debug_topics, .live = true,
          .comment = "log topics raised to debug, e.g. \"sim,mqtt\" or \"all\"" },
        { "log.summary_interval", CONFIG_UINT, F(summary_interval_s), "30", 0, 86400, .live = true,
          .comment = "seconds between two fleet summary lines (and STATUS= updates); 0 = off" },
};

static void *item_ptr(DaemonConfig *c, const ConfigItem *it) {
        return (uint8_t *) c + it->offset;
}
static const void *item_cptr(const DaemonConfig *c, const ConfigItem *it) {
        return (const uint8_t *) c + it->offset;
}

static void strv_free(char **v) {
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
}

static void item_clear(DaemonConfig *c, const ConfigItem *it) {
        void *p = item_ptr(c, it);

        switch (it->type) {
        case CONFIG_STRING:
                free(*(char **) p);
                *(char **) p = NULL;
                break;
        case CONFIG_STRV:
                strv_free(*(char ***) p);
                *(char ***) p = NULL;
                break;
        case CONFIG_UINT:
        case CONFIG_DOUBLE:
        case CONFIG_BOOL:
        case CONFIG_TLS_VERSION:
                break;
        }
}

/* Sets a default from its text form (the table is trusted: no range check). */
static int item_set_default(DaemonConfig *c, const ConfigItem *it) {
        void *p = item_ptr(c, it);

        switch (it->type) {
        case CONFIG_STRING:
                *(char **) p = strdup(it->def);
                return *(char **) p ? 0 : -ENOMEM;
        case CONFIG_UINT:
                *(unsigned *) p = (unsigned) strtoul(it->def, NULL, 10);
                return 0;
        case CONFIG_DOUBLE:
                *(double *) p = strtod(it->def, NULL);
                return 0;
        case CONFIG_BOOL:
                *(bool *) p = streq(it->def, "true");
                return 0;
        case CONFIG_STRV:
                *(char ***) p = calloc(1, sizeof(char *)); /* defaults are empty lists */
                return *(char ***) p ? 0 : -ENOMEM;
        case CONFIG_TLS_VERSION:
                *(TlsVersion *) p = tls_version_from_string(it->def);
                return 0;
        }
        return -EINVAL;
}

int daemon_config_init(DaemonConfig *c) {
        *c = (DaemonConfig) {};
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++) {
                int r = item_set_default(c, &config_items[i]);
                if (r < 0) {
                        daemon_config_done(c);
                        return r;
                }
        }
        return 0;
}

void daemon_config_done(DaemonConfig *c) {
        if (!c)
                return;
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                item_clear(c, &config_items[i]);
}

static const char *config_type_name(int t) {
        switch (t) {
        case CONFIG_TYPE_GROUP: return "a group";
        case CONFIG_TYPE_INT: return "an integer";
        case CONFIG_TYPE_INT64: return "a 64-bit integer";
        case CONFIG_TYPE_FLOAT: return "a number";
        case CONFIG_TYPE_STRING: return "a string";
        case CONFIG_TYPE_BOOL: return "a boolean";
        case CONFIG_TYPE_ARRAY: return "an array";
        case CONFIG_TYPE_LIST: return "a list";
        default: return "something else";
        }
}

static const char *item_type_name(ConfigType t) {
        switch (t) {
        case CONFIG_STRING: return "a string";
        case CONFIG_UINT: return "an integer";
        case CONFIG_DOUBLE: return "a number";
        case CONFIG_BOOL: return "true or false";
        case CONFIG_STRV: return "a list of strings";
        case CONFIG_TLS_VERSION: return "a string";
        }
        return "?";
}

typedef struct ParseCtx {
        const char *name;       /* file name for messages */
        char *err;
        size_t errlen;
} ParseCtx;

static int fail_at(ParseCtx *ctx, const config_setting_t *s, const char *path, const char *fmt, ...) _printf_(4, 5);
static int fail_at(ParseCtx *ctx, const config_setting_t *s, const char *path, const char *fmt, ...) {
        char reason[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(reason, sizeof reason, fmt, ap);
        va_end(ap);
        const char *file = (s ? config_setting_source_file(s) : NULL) ?: ctx->name;
        snprintf(ctx->err, ctx->errlen, "%s:%u: key '%s': %s", file, s ? config_setting_source_line(s) : 0,
                 path, reason);
        return -EINVAL;
}

static const ConfigItem *item_find(const char *path) {
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                if (streq(config_items[i].path, path))
                        return &config_items[i];
        return NULL;
}

static bool group_known(const char *path) {
        size_t n = strlen(path);
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                if (strneq(config_items[i].path, path, n) && config_items[i].path[n] == '.')
                        return true;
        return false;
}

static int item_parse(ParseCtx *ctx, DaemonConfig *c, const ConfigItem *it, const config_setting_t *s) {
        char reason[400];
        int t = config_setting_type(s);
        void *p = item_ptr(c, it);

        switch (it->type) {
        case CONFIG_STRING:
        case CONFIG_TLS_VERSION: {
                if (t != CONFIG_TYPE_STRING)
                        return fail_at(ctx, s, it->path, "expected %s, got %s", item_type_name(it->type), config_type_name(t));
                const char *v = config_setting_get_string(s);
                if (it->type == CONFIG_TLS_VERSION) {
                        TlsVersion tv = tls_version_from_string(v);
                        if (tv < 0)
                                return fail_at(ctx, s, it->path, "'%s' is not \"tlsv1.2\" or \"tlsv1.3\"", v);
                        *(TlsVersion *) p = tv;
                        return 0;
                }
                if (it->check && it->check(v, reason, sizeof reason) < 0)
                        return fail_at(ctx, s, it->path, "%s", reason);
                char *dup = strdup(v);
                if (!dup)
                        return -ENOMEM;
                free(*(char **) p);
                *(char **) p = dup;
                return 0;
        }
        case CONFIG_UINT: {
                long long v;
                if (t == CONFIG_TYPE_INT)
                        v = config_setting_get_int(s);
                else if (t == CONFIG_TYPE_INT64)
                        v = config_setting_get_int64(s);
                else
                        return fail_at(ctx, s, it->path, "expected an integer, got %s", config_type_name(t));
                if ((double) v < it->min || (double) v > it->max)
                        return fail_at(ctx, s, it->path, "%lld is out of range %.0f..%.0f", v, it->min, it->max);
                *(unsigned *) p = (unsigned) v;
                return 0;
        }
        case CONFIG_DOUBLE: {
                double v;
                if (t == CONFIG_TYPE_FLOAT)
                        v = config_setting_get_float(s);
                else if (t == CONFIG_TYPE_INT)
                        v = config_setting_get_int(s);
                else if (t == CONFIG_TYPE_INT64)
                        v = (double) config_setting_get_int64(s);
                else
                        return fail_at(ctx, s, it->path, "expected a number, got %s", config_type_name(t));
                if (!isfinite(v) || v < it->min || v > it->max)
                        return fail_at(ctx, s, it->path, "%g is out of range %g..%g", v, it->min, it->max);
                *(double *) p = v;
                return 0;
        }
        case CONFIG_BOOL:
                if (t != CONFIG_TYPE_BOOL)
                        return fail_at(ctx, s, it->path, "expected true or false, got %s", config_type_name(t));
                *(bool *) p = config_setting_get_bool(s);
                return 0;
        case CONFIG_STRV: {
                if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
                        return fail_at(ctx, s, it->path, "expected a list of strings, got %s", config_type_name(t));
                int n = config_setting_length(s);
                if (n > CONFIG_BIND_MAX)
                        return fail_at(ctx, s, it->path, "at most %d entries", CONFIG_BIND_MAX);
                char **v = calloc((size_t) n + 1, sizeof(char *));
                if (!v)
                        return -ENOMEM;
                for (int i = 0; i < n; i++) {
                        const config_setting_t *e = config_setting_get_elem(s, (unsigned) i);
                        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                                strv_free(v);
                                return fail_at(ctx, e, it->path, "entry %d: expected a string, got %s", i,
                                               config_type_name(config_setting_type(e)));
                        }
                        const char *sv = config_setting_get_string(e);
                        if (it->check && it->check(sv, reason, sizeof reason) < 0) {
                                strv_free(v);
                                return fail_at(ctx, e, it->path, "entry %d: %s", i, reason);
                        }
                        v[i] = strdup(sv);
                        if (!v[i]) {
                                strv_free(v);
                                return -ENOMEM;
                        }
                }
                strv_free(*(char ***) p);
                *(char ***) p = v;
                return 0;
        }
        }
        return -EINVAL;
}

static int walk(ParseCtx *ctx, DaemonConfig *c, const config_setting_t *group, const char *prefix) {
        int n = config_setting_length(group);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(group, (unsigned) i);
                const char *name = config_setting_name(s);
                char path[256];
                int r;

                if (!name)
                        continue;
                snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", name);
                const ConfigItem *it = item_find(path);
                if (it) {
                        r = item_parse(ctx, c, it, s);
                } else if (group_known(path)) {
                        if (config_setting_type(s) != CONFIG_TYPE_GROUP)
                                return fail_at(ctx, s, path, "expected a group { … }, got %s",
                                               config_type_name(config_setting_type(s)));
                        r = walk(ctx, c, s, path);
                } else
                        return fail_at(ctx, s, path, "unknown key");
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Checks that span several keys; the error points at the later key. */
static int cross_check(ParseCtx *ctx, config_t *cfg, DaemonConfig *c) {
        if (c->backoff_min_ms > c->backoff_max_ms)
                return fail_at(ctx, config_lookup(cfg, "reconnect.backoff_max_ms") ?: config_lookup(cfg, "reconnect.backoff_min_ms"),
                               "reconnect.backoff_max_ms", "%u is below reconnect.backoff_min_ms (%u)",
                               c->backoff_max_ms, c->backoff_min_ms);
        return 0;
}

/* dst's value of `it` becomes src's (strings duplicated). */
static void copy_item(DaemonConfig *dst, const DaemonConfig *src, const ConfigItem *it) {
        switch (it->type) {
        case CONFIG_STRING: {
                char *n = strdup(*(char *const *) item_cptr(src, it) ?: "");
                if (!n)
                        return; /* out of memory: dst keeps its value */
                free(*(char **) item_ptr(dst, it));
                *(char **) item_ptr(dst, it) = n;
                break;
        }
        case CONFIG_STRV: {
                char *const *v0 = *(char **const *) item_cptr(src, it);
                size_t n = 0;
                while (v0 && v0[n])
                        n++;
                char **v = calloc(n + 1, sizeof(char *));
                if (!v)
                        return;
                for (size_t k = 0; k < n; k++)
                        v[k] = strdup(v0[k]);
                strv_free(*(char ***) item_ptr(dst, it));
                *(char ***) item_ptr(dst, it) = v;
                break;
        }
        case CONFIG_UINT:
                *(unsigned *) item_ptr(dst, it) = *(const unsigned *) item_cptr(src, it);
                break;
        case CONFIG_DOUBLE:
                *(double *) item_ptr(dst, it) = *(const double *) item_cptr(src, it);
                break;
        case CONFIG_BOOL:
                *(bool *) item_ptr(dst, it) = *(const bool *) item_cptr(src, it);
                break;
        case CONFIG_TLS_VERSION:
                *(TlsVersion *) item_ptr(dst, it) = *(const TlsVersion *) item_cptr(src, it);
                break;
        }
}

void daemon_config_copy(DaemonConfig *dst, const DaemonConfig *src) {
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                copy_item(dst, src, &config_items[i]);
}

void daemon_config_apply_live(DaemonConfig *dst, const DaemonConfig *src) {
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                if (config_items[i].live)
                        copy_item(dst, src, &config_items[i]);
}

/* The group components of a key path ("scenario.ramp.profile" -> 2). */
static size_t path_depth(const char *path) {
        size_t n = 0;
        for (const char *p = path; p && (p = strchr(p, '.')); p++)
                n++;
        return n;
}

/* Component k of path, as pointer + length. */
static const char *path_part(const char *path, size_t k, size_t *len) {
        const char *p = path;
        for (size_t i = 0; i < k; i++)
                p = strchr(p, '.') + 1;
        const char *e = strchr(p, '.');
        *len = e ? (size_t) (e - p) : strlen(p);
        return p;
}

static void indent(FILE *f, size_t depth) {
        for (size_t i = 0; i < depth; i++)
                fputs("        ", f);
}

/* Closes the groups of `prev` that `cur` is not in and opens cur's new ones
 * (either may be NULL: the start, the end). `blank`: a blank line before a
 * new top-level group or key. */
static void group_transition(FILE *f, const char *prev, const char *cur, bool blank) {
        size_t dp = prev ? path_depth(prev) : 0, dc = cur ? path_depth(cur) : 0, common = 0;

        while (common < dp && common < dc) {
                size_t la, lb;
                const char *a = path_part(prev, common, &la), *b = path_part(cur, common, &lb);
                if (la != lb || !strneq(a, b, la))
                        break;
                common++;
        }
        for (size_t d = dp; d > common; d--) {
                indent(f, d - 1);
                fputs("};\n", f);
        }
        if (blank && cur && (common == 0 || !prev))
                fputc('\n', f);
        for (size_t d = common; d < dc; d++) {
                size_t l;
                const char *n = path_part(cur, d, &l);
                indent(f, d);
                fprintf(f, "%.*s = {\n", (int) l, n);
        }
}

static void format_string(FILE *f, const char *v) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) v; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fprintf(f, "\\%c", *p);
                else if (*p < 0x20)
                        fprintf(f, "\\x%02x", *p);
                else
                        fputc(*p, f);
        }
        fputc('"', f);
}

int daemon_config_format(const DaemonConfig *c, FILE *f) {
        const char *prev = NULL;

        fputs("# the effective configuration of a running espfleetd\n", f);
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++) {
                const ConfigItem *it = &config_items[i];
                size_t depth = path_depth(it->path), l;
                const char *key = path_part(it->path, depth, &l);
                const void *p = item_cptr(c, it);

                group_transition(f, prev, it->path, false);
                prev = it->path;
                indent(f, depth);
                fprintf(f, "%s = ", key);
                switch (it->type) {
                case CONFIG_STRING:
                        format_string(f, *(char *const *) p ?: "");
                        break;
                case CONFIG_TLS_VERSION:
                        format_string(f, *(const TlsVersion *) p == TLS_VERSION_1_3 ? "tlsv1.3" : "tlsv1.2");
                        break;
                case CONFIG_STRV: {
                        fputs("[", f);
                        char *const *v = *(char **const *) p;
                        for (size_t k = 0; v && v[k]; k++) {
                                fputs(k ? ", " : " ", f);
                                format_string(f, v[k]);
                        }
                        fputs(" ]", f);
                        break;
                }
                case CONFIG_UINT:
                        fprintf(f, "%u", *(const unsigned *) p);
                        break;
                case CONFIG_DOUBLE: {
                        /* %.17g round-trips; a float needs a point for libconfig */
                        char buf[64];
                        snprintf(buf, sizeof buf, "%.17g", *(const double *) p);
                        fprintf(f, "%s%s", buf, strpbrk(buf, ".eEn") ? "" : ".0");
                        break;
                }
                case CONFIG_BOOL:
                        fputs(*(const bool *) p ? "true" : "false", f);
                        break;
                }
                fputs(";\n", f);
        }
        group_transition(f, prev, NULL, false);
        return ferror(f) ? -EIO : 0;
}

static int config_parse(DaemonConfig *c, config_t *cfg, bool ok, const char *name, char *err, size_t errlen) {
        ParseCtx ctx = { .name = name, .err = err, .errlen = errlen };
        DaemonConfig tmp;
        int r;

        if (!ok) {
                if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
                        snprintf(err, errlen, "%s: cannot read: %m", name);
                else
                        snprintf(err, errlen, "%s:%d: %s", config_error_file(cfg) ?: name,
                                 config_error_line(cfg), config_error_text(cfg));
                return -EINVAL;
        }
        /* Parse into a copy so a bad file leaves *c untouched. */
        r = daemon_config_init(&tmp);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                copy_item(&tmp, c, &config_items[i]);
        r = walk(&ctx, &tmp, config_root_setting(cfg), "");
        if (r >= 0)
                r = cross_check(&ctx, cfg, &tmp);
        if (r < 0) {
                daemon_config_done(&tmp);
                return r;
        }
        daemon_config_done(c);
        *c = tmp;
        return 0;
}

/* libconfig's "@include" opens whatever path it names: a directory, or a
 * file that fails to read, makes its flex scanner call exit() ("input in
 * flex scanner failed", hyperrealm/libconfig#292), which would end the
 * daemon on a SIGHUP reload; a FIFO would block it. espfleetd's
 * configuration is one file (the sample lists every key), so an @include
 * line is refused here, before libconfig reads the text. libconfig takes
 * the directive at the start of a line, after blanks. */
static int check_no_include(const char *text, const char *name, char *err, size_t errlen) {
        unsigned line = 1;

        for (const char *p = text; *p; line++) {
                const char *nl = strchr(p, '\n');

                p += strspn(p, " \t");
                if (strneq(p, "@include", 8)) {
                        snprintf(err, errlen, "%s:%u: @include is not supported (the configuration is one file)",
                                 name, line);
                        return -EINVAL;
                }
                if (!nl)
                        break;
                p = nl + 1;
        }
        return 0;
}

static int config_parse_text(DaemonConfig *c, const char *text, const char *name, char *err, size_t errlen) {
        config_t cfg;
        int r;

        r = check_no_include(text, name, err, errlen);
        if (r < 0)
                return r;
        config_init(&cfg);
        r = config_parse(c, &cfg, config_read_string(&cfg, text) == CONFIG_TRUE, name, err, errlen);
        config_destroy(&cfg);
        return r;
}

#define CONFIG_FILE_MAX (1024u * 1024u)

int daemon_config_load(DaemonConfig *c, const char *path, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;
        int r;

        /* Read here rather than by libconfig, to see the text first. */
        r = read_full_file(path, CONFIG_FILE_MAX, &data, &size);
        if (r < 0) {
                snprintf(err, errlen, "%s: cannot read: %s", path,
                         r == -EFBIG ? "larger than 1 MiB" : strerror(-r));
                return -EINVAL;
        }
        if (memchr(data, 0, size)) {
                snprintf(err, errlen, "%s: not a text file (contains NUL bytes)", path);
                return -EINVAL;
        }
        return config_parse_text(c, (const char *) data, path, err, errlen);
}

int daemon_config_load_string(DaemonConfig *c, const char *text, const char *name, char *err, size_t errlen) {
        return config_parse_text(c, text, name, err, errlen);
}

int daemon_config_workers_for(const DaemonConfig *c, unsigned n_devices, unsigned nofile, char *err, size_t errlen) {
        unsigned budget = fd_budget_devices(nofile, c->ota_max_concurrent);

        return fd_budget_workers(n_devices, c->workers, c->devices_per_worker_max, budget, err, errlen);
}

static void dump_value(FILE *f, const ConfigItem *it) {
        switch (it->type) {
        case CONFIG_STRING:
        case CONFIG_TLS_VERSION:
                fprintf(f, "\"%s\"", it->def);
                break;
        case CONFIG_STRV:
                fputs("[ ]", f);
                break;
        case CONFIG_UINT:
        case CONFIG_BOOL:
                fputs(it->def, f);
                break;
        case CONFIG_DOUBLE:
                /* libconfig types 100 as an integer; the parser takes both */
                fputs(it->def, f);
                break;
        }
}

int daemon_config_foreach(const DaemonConfig *c, ConfigVisitor *v, void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++) {
                const ConfigItem *it = &config_items[i];
                const void *p = item_cptr(c, it);
                switch (it->type) {
                case CONFIG_STRING:
                        v->string(it->path, *(char *const *) p ?: "", userdata);
                        break;
                case CONFIG_TLS_VERSION:
                        v->string(it->path, *(const TlsVersion *) p == TLS_VERSION_1_3 ? "tlsv1.3" : "tlsv1.2", userdata);
                        break;
                case CONFIG_STRV:
                        v->strv(it->path, *(char **const *) p, userdata);
                        break;
                case CONFIG_UINT:
                        v->number(it->path, *(const unsigned *) p, userdata);
                        break;
                case CONFIG_DOUBLE:
                        v->number(it->path, *(const double *) p, userdata);
                        break;
                case CONFIG_BOOL:
                        v->boolean(it->path, *(const bool *) p, userdata);
                        break;
                }
        }
        return 0;
}

int daemon_config_dump_sample(FILE *f) {
        const char *prev = NULL;

        fputs("# espfleetd configuration (libconfig syntax).\n"
              "# Every key is listed, commented out, at its default. Unknown keys, wrong\n"
              "# types and out-of-range values stop the daemon with FILE:LINE and the key.\n", f);
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++) {
                const ConfigItem *it = &config_items[i];
                size_t depth = path_depth(it->path), l;
                const char *key = path_part(it->path, depth, &l);

                group_transition(f, prev, it->path, true);
                indent(f, depth);
                fprintf(f, "# %s%s\n", it->comment, it->live ? "" : " (restart)");
                indent(f, depth);
                fprintf(f, "#%s = ", key);
                dump_value(f, it);
                fputs(";\n", f);
                prev = it->path;
        }
        group_transition(f, prev, NULL, true);
        return ferror(f) ? -EIO : 0;
}

static bool item_equal(const DaemonConfig *a, const DaemonConfig *b, const ConfigItem *it) {
        const void *pa = item_cptr(a, it), *pb = item_cptr(b, it);

        switch (it->type) {
        case CONFIG_STRING:
                return streq_ptr(*(char *const *) pa, *(char *const *) pb);
        case CONFIG_STRV: {
                char *const *x = *(char **const *) pa, *const *y = *(char **const *) pb;
                for (; x && y && *x && *y; x++, y++)
                        if (!streq(*x, *y))
                                return false;
                return (!x || !*x) && (!y || !*y);
        }
        case CONFIG_UINT:
                return *(const unsigned *) pa == *(const unsigned *) pb;
        case CONFIG_DOUBLE:
                return *(const double *) pa == *(const double *) pb;
        case CONFIG_BOOL:
                return *(const bool *) pa == *(const bool *) pb;
        case CONFIG_TLS_VERSION:
                return *(const TlsVersion *) pa == *(const TlsVersion *) pb;
        }
        return false;
}

size_t daemon_config_changed(const DaemonConfig *old, const DaemonConfig *new, bool live, const char **ret,
                             size_t n) {
        size_t k = 0;

        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                if (config_items[i].live == live && !item_equal(old, new, &config_items[i])) {
                        if (k < n)
                                ret[k] = config_items[i].path;
                        k++;
                }
        return k;
}

bool daemon_config_needs_restart(const DaemonConfig *old, const DaemonConfig *new, const char **changed) {
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                if (!config_items[i].live && !item_equal(old, new, &config_items[i])) {
                        if (changed)
                                *changed = config_items[i].path;
                        return true;
                }
        return false;
}
