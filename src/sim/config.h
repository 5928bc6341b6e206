/* SPDX-License-Identifier: MIT */
#pragma once

/* espfleetd configuration (libconfig). Every key lives in one table in
 * config.c: path, type, offset into DaemonConfig, validator, default. The shipped
 * etc/espfleet.conf lists every key commented out at its default. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_BIND_MAX 64

typedef enum TlsVersion {
        TLS_VERSION_1_2,
        TLS_VERSION_1_3,
        _TLS_VERSION_MAX,
        _TLS_VERSION_INVALID = -EINVAL,
} TlsVersion;

typedef struct DaemonConfig {
        /* fleet */
        char *fleet_dir;                 /* fleet directory (HACKING.md) */
        unsigned first_device;           /* first manifest index this daemon runs */
        unsigned device_count;           /* 0 = every device from first_device on */
        char *shard;                     /* "I/N" (fleet/shard.h) or "" = not sharded */
        unsigned workers;                /* worker processes; 0 = auto */
        unsigned devices_per_worker_max; /* used by workers = 0 */
        unsigned worker_watchdog_s;      /* a worker silent this long is killed and restarted */

        /* broker */
        char *broker_host;               /* also the name checked in the broker's certificate */
        unsigned broker_port;
        char **broker_hosts;             /* "host", "host:port" or "[v6]:port"; empty = broker_host:broker_port */
        char **bind_addresses;           /* NULL-terminated; empty = let the kernel pick */
        unsigned keepalive_s;
        TlsVersion tls_version_min;
        unsigned qos;                    /* QoS of subscriptions and device publishes */
        char *protocol;                  /* "mqttv311" or "mqttv5" */

        /* ramp and reconnect */
        double ramp_rate;                /* devices started per second */
        double ramp_jitter;              /* 0..1: fraction of the slot spread at random */
        unsigned backoff_min_ms;
        unsigned backoff_max_ms;
        double backoff_jitter;           /* 0..1: fraction of the delay drawn at random */
        double connect_rate_max;         /* fleet-wide connection attempts per second */
        unsigned connect_inflight_max;   /* fleet-wide connection attempts in flight (TCP+TLS+CONNACK) */
        unsigned connect_timeout_ms;     /* TCP+TLS+CONNACK must finish within this */
        unsigned give_up_after;          /* consecutive failed attempts before FAILED; 0 = never */

        /* device */
        unsigned boot_time_ms;           /* time from reset to the first connection attempt */
        char *log_topic;                 /* template, "%s" = device id; "/esp/log" = the seed's topic */
        bool log_id_prefix;              /* "[esp-xxxxxx] " before each log-topic line */
        char *status_topic;              /* retained online/offline + version */
        char *telemetry_topic;
        bool telemetry_enabled;
        unsigned telemetry_interval_s;
        unsigned telemetry_qos;
        double telemetry_rate;           /* readings/s per device; 0 = telemetry_interval_s */
        unsigned telemetry_payload_size; /* pad to this many bytes; 0 = none */
        unsigned default_interval_s;     /* OTA interval before /esp/update/interval was ever set */

        /* OTA */
        char *ota_default_url;           /* CONFIG_EXAMPLE_FIRMWARE_UPGRADE_URL equivalent */
        unsigned ota_max_concurrent;     /* downloads per worker at a time; the others wait in line */
        bool ota_allow_equal_version;
        unsigned ota_start_jitter_ms;
        unsigned ota_confirm_timeout_s;  /* PENDING_VERIFY -> VALID must happen within this */
        unsigned ota_max_retries;        /* transient failures only (ota-session.h) */
        unsigned ota_retry_backoff_min_ms;
        unsigned ota_retry_backoff_max_ms; /* also caps Retry-After */
        unsigned ota_low_speed_limit;    /* bytes/s */
        unsigned ota_low_speed_time_s;

        /* scenario */
        char *ramp_profile;              /* "linear", "steps", "poisson" */
        unsigned ramp_step_size;
        double ramp_step_interval_s;
        unsigned scenario_hold_s;        /* 0 = run until stopped */
        double churn_rate;               /* fleet-wide disconnects per second */
        unsigned storm_at_s, storm_every_s;
        double pass_online_min_percent, pass_connect_p99_max_ms, pass_connack_p99_max_ms, pass_ota_failures_max;

        /* instruments */
        bool metrics_record;             /* histograms and counters (the instruments' own cost) */
        char *metrics_listen;            /* "ADDRESS:PORT" or "" (off) */
        char *control_socket;            /* "" = the default path (control_socket_default_path()) */
        bool probe_enabled;
        char *probe_cert, *probe_key;

        /* daemon */
        unsigned summary_interval_s;     /* fleet summary and STATUS= period; 0 = off */
        char *log_level;                 /* err, warning, notice, info, debug */
        char *debug_topics;              /* "sim,mqtt" or "all" */
} DaemonConfig;

/* dst becomes a copy of src (every key; dst was initialized). */
void daemon_config_copy(DaemonConfig *dst, const DaemonConfig *src);
/* The keys applied on SIGHUP (the table's .live ones): dst takes src's. */
void daemon_config_apply_live(DaemonConfig *dst, const DaemonConfig *src);
/* Every key with its value, in libconfig syntax: what a worker reads (the
 * supervisor's effective config, so a restarted worker gets the same). */
int daemon_config_format(const DaemonConfig *c, FILE *f);

/* Every key with its current value, in table order (the report's effective config). */
typedef struct ConfigVisitor {
        void (*string)(const char *key, const char *value, void *userdata);
        void (*strv)(const char *key, char *const *values, void *userdata);
        void (*number)(const char *key, double value, void *userdata);
        void (*boolean)(const char *key, bool value, void *userdata);
} ConfigVisitor;
int daemon_config_foreach(const DaemonConfig *c, ConfigVisitor *v, void *userdata);

/* "ADDRESS:PORT" (numeric, "[v6]:port" for IPv6) -> host, port. */
int config_parse_listen(const char *v, char *host, size_t size, unsigned *ret_port);

/* Fills every field with its default (the table in config.c). */
int daemon_config_init(DaemonConfig *c);
void daemon_config_done(DaemonConfig *c);

/* Parses `path` over the defaults already in *c. On a syntax error, an
 * unknown key, a wrong type or an out-of-range value returns -EINVAL and
 * writes "FILE:LINE: key 'a.b': reason" into err. */
int daemon_config_load(DaemonConfig *c, const char *path, char *err, size_t errlen);
/* Same, from a string (tests); `name` stands in for the file name. */
int daemon_config_load_string(DaemonConfig *c, const char *text, const char *name, char *err, size_t errlen);

/* Worker count for n_devices with `nofile` open files per process
 * (fd-budget.h): `workers` if set, else ceil(devices / devices_per_worker),
 * never more devices in one worker than its fd budget holds. -ERANGE with
 * err filled when an explicit `workers` cannot hold the fleet. */
int daemon_config_workers_for(const DaemonConfig *c, unsigned n_devices, unsigned nofile, char *err, size_t errlen);

/* Writes the sample config (every key commented out at its default, one
 * comment each) to f: the source of etc/espfleet.conf. */
int daemon_config_dump_sample(FILE *f);

/* Keys whose new value needs a daemon restart; fills `changed` with the
 * first such key path, returns true when any differs. */
/* One entry of broker.hosts: "host", "host:port", "[v6]" or "[v6]:port"
 * (a bare IPv6 address has no port). The port defaults to default_port.
 * 0, -EINVAL (not of these forms, or a host too long) or -ERANGE (the port). */
int broker_endpoint_parse(const char *s, unsigned default_port, char *host, size_t hostlen, unsigned *ret_port);

bool daemon_config_needs_restart(const DaemonConfig *old, const DaemonConfig *new, const char **changed);
/* The keys ("group.key") that differ between old and new, live ones or
 * restart ones, in table order: up to n of them in ret. Returns how many
 * differ (which may be more than n). */
size_t daemon_config_changed(const DaemonConfig *old, const DaemonConfig *new, bool live, const char **ret,
                             size_t n);

const char *tls_version_to_string(TlsVersion v);
TlsVersion tls_version_from_string(const char *s);
int log_level_from_string(const char *s);
