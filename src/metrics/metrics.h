/* SPDX-License-Identifier: MIT */
#pragma once

/* What a worker measures, laid out as plain data in one shared memory
 * block per worker (a memfd the supervisor creates and keeps, so a
 * restarted worker goes on counting where the last one stopped): counters,
 * gauges, histograms, and one record per device.
 *
 * The worker is the only writer; the supervisor reads at any time (a
 * scrape, a status query, a report). Counters and histograms are read
 * without locks: an aligned 64-bit load on the machines we run on is never
 * torn, so a reader is at most a few events behind. A device record is
 * copied under its sequence number (metrics_device_read()), since it holds
 * strings.
 *
 * Latencies are in microseconds and are measured from when an action was
 * due, not from when the loop got to it (no coordinated omission): a
 * stalled loop shows up in the numbers. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics/histogram.h"

#define METRICS_MAGIC UINT32_C(0x4d455350)     /* "PSEM" */
#define METRICS_VERSION 1

typedef enum MetricHistogram {
        METRIC_CONNECT,                 /* connection due (ramp slot, backoff end) -> CONNACK */
        METRIC_TCP_CONNECT,             /* connection due -> TCP established */
        METRIC_TLS_HANDSHAKE,           /* TCP established -> TLS handshake done */
        METRIC_DS_SIGN,                 /* one Digital Signature operation (inside the handshake) */
        METRIC_CONNACK,                 /* handshake done (CONNECT sent) -> CONNACK */
        METRIC_SUBACK,                  /* SUBSCRIBE -> SUBACK */
        METRIC_PUBACK,                  /* QoS 1 publish due -> PUBACK */
        METRIC_COMMAND,                 /* a command seen on /esp/... -> the device's next log line (probe) */
        METRIC_TELEMETRY,               /* a telemetry reading due -> the probe has it */
        METRIC_OTA_TTFB,                /* download started -> first body byte */
        METRIC_OTA_DOWNLOAD,            /* download started -> image complete */
        METRIC_OTA_THROUGHPUT,          /* bytes per second of a complete download (not µs) */
        METRIC_OTA_VERIFY,              /* image complete -> verified and selected */
        METRIC_OTA_RUN_TO_ONLINE,       /* /esp/update/run -> online again running the new version */
        _METRIC_HISTOGRAM_MAX,
} MetricHistogram;

typedef enum MetricCounter {
        METRIC_CONNECT_ATTEMPTS,        /* connections started */
        METRIC_CONNECTS,                /* CONNACK accepted */
        METRIC_MESSAGES_IN,             /* PUBLISH received by devices */
        METRIC_MESSAGES_OUT,            /* PUBLISH sent by devices */
        METRIC_REBOOTS,                 /* device resets (boot, restart command, OTA, power cut) */
        METRIC_ROLLBACKS,               /* boots that fell back to the previous app */
        METRIC_OTA_STARTED,             /* downloads started */
        METRIC_OTA_BYTES,               /* body bytes downloaded */
        METRIC_PROBE_MESSAGES,          /* messages the probe received */
        _METRIC_COUNTER_MAX,
} MetricCounter;

/* Why a connection attempt failed or a connection ended: a class and a
 * detail byte, packed as (class << 8) | detail. */
typedef enum MetricReasonClass {
        METRIC_REASON_GENERIC,          /* detail: MetricReasonGeneric */
        METRIC_REASON_TLS_ALERT,        /* detail: the TLS alert description received (RFC 8446 §6) */
        METRIC_REASON_CONNACK,          /* detail: the CONNACK return code */
        METRIC_REASON_ERRNO,            /* detail: an errno below 256 */
        _METRIC_REASON_CLASS_MAX,
} MetricReasonClass;

typedef enum MetricReasonGeneric {
        METRIC_REASON_OTHER,
        METRIC_REASON_REQUESTED,        /* we asked for it (restart, shutdown) */
        METRIC_REASON_TCP_REFUSED,
        METRIC_REASON_TCP_TIMEOUT,
        METRIC_REASON_TCP_UNREACHABLE,
        METRIC_REASON_TCP_RESET,        /* reset or closed by the broker */
        METRIC_REASON_TLS_HANDSHAKE,    /* the handshake failed without an alert */
        METRIC_REASON_CERT_VERIFY,      /* the broker's certificate failed verification */
        METRIC_REASON_NO_CONNACK,       /* closed after the handshake, before CONNACK */
        METRIC_REASON_SUBACK_REFUSED,   /* a SUBACK refused a subscription (0x80) */
        METRIC_REASON_KEEPALIVE,        /* no PINGRESP in time */
        METRIC_REASON_PROTOCOL,         /* a malformed or unexpected packet */
        METRIC_REASON_POWER_CUT,        /* the device lost power */
        METRIC_REASON_CHURN,            /* scenario.churn dropped it */
        METRIC_REASON_STORM,            /* scenario.storm dropped it */
        _METRIC_REASON_GENERIC_MAX,
} MetricReasonGeneric;

#define METRIC_REASON(class, detail) ((uint16_t) (((unsigned) (class) << 8) | ((unsigned) (detail) & 0xffu)))
#define METRIC_REASON_SLOTS (_METRIC_REASON_CLASS_MAX * 256)

/* A name for Prometheus labels and reports ("tcp_refused",
 * "tls_alert_bad_certificate", "connack_not_authorized", "errno_eio");
 * NULL for a slot that has none. */
const char *metrics_reason_name(unsigned reason, char *buf, size_t size);

/* OTA outcomes are counted by result code (named with esp_err_to_name():
 * "ESP_OK", "ESP_ERR_OTA_VALIDATE_FAILED", …): a slot is taken by the first
 * outcome with its code; the last slot counts every code past the others. */
#define METRIC_OTA_RESULT_SLOTS 64
typedef struct MetricsOtaResult {
        int32_t code;                   /* 0 or a negative ESP/errno code */
        uint32_t used;
        uint64_t count;
} MetricsOtaResult;

#define METRIC_STATE_SLOTS 16           /* >= _DEVICE_STATE_MAX */

typedef struct MetricsOtaRecord {
        uint64_t at_usec;               /* CLOCK_REALTIME of the outcome */
        int32_t error;                  /* 0 or a negative ESP/errno code (esp_err_to_name) */
        uint32_t duration_ms;
        char version[32];               /* the downloaded app's version, "" if never seen */
} MetricsOtaRecord;

#define METRICS_OTA_HISTORY 4

typedef struct MetricsDevice {
        uint32_t seq;                   /* odd while the worker writes the record */
        uint8_t state;                  /* DeviceState */
        uint8_t ota_active;
        uint8_t online_ever;            /* reached the broker at least once */
        uint8_t _pad;
        uint32_t connects;              /* CONNACK accepted */
        uint32_t connect_failures;
        uint32_t disconnects;           /* connections lost or ended while online */
        uint32_t reboots;
        uint32_t rollbacks;
        uint32_t ota_count;             /* OTA outcomes (ota_history holds the last ones) */
        uint64_t state_since_usec;      /* CLOCK_REALTIME */
        uint64_t last_connect_usec;     /* due -> CONNACK, the last connection */
        uint64_t max_connect_usec;      /* the slowest connection so far */
        uint64_t last_error_usec;       /* CLOCK_REALTIME of last_error */
        char id[24];
        char broker[56];                /* address:port of the current or last connection */
        char version[32];               /* the running app's version */
        char last_error[160];
        MetricsOtaRecord ota_history[METRICS_OTA_HISTORY]; /* ota_count % 4 is the next slot */
} MetricsDevice;

typedef struct MetricsBlock {
        uint32_t magic;                 /* METRICS_MAGIC, set by metrics_block_init() */
        uint32_t version;
        uint32_t worker;
        uint32_t n_devices;             /* records in devices[] */
        uint64_t started_usec;          /* CLOCK_REALTIME of the first worker start */
        uint64_t worker_starts;
        uint64_t heartbeat_usec;        /* CLOCK_MONOTONIC, updated every report */

        uint64_t counters[_METRIC_COUNTER_MAX];
        uint64_t connect_failures[METRIC_REASON_SLOTS];
        uint64_t disconnects[METRIC_REASON_SLOTS];
        MetricsOtaResult ota_results[METRIC_OTA_RESULT_SLOTS];

        /* gauges */
        uint64_t devices_in_state[METRIC_STATE_SLOTS];
        uint64_t downloads_active;
        uint64_t downloads_queued;

        Histogram histograms[_METRIC_HISTOGRAM_MAX];

        MetricsDevice devices[];
} MetricsBlock;

/* Bytes of a block for n devices (a multiple of the page size). */
size_t metrics_block_size(size_t n_devices);
/* Lays out a zero-filled block, or checks one that was laid out before (a
 * restarted worker): -EBADMSG if `b` holds something else. */
int metrics_block_init(MetricsBlock *b, unsigned worker, size_t n_devices);

/* Creates a memfd holding a laid-out block for n devices and maps it:
 * the supervisor's side. */
int metrics_block_create(unsigned worker, size_t n_devices, int *ret_fd, MetricsBlock **ret);
/* Maps a block from its fd (the worker's side); checks magic, version and size. */
int metrics_block_map(int fd, MetricsBlock **ret, size_t *ret_size);
void metrics_block_unmap(MetricsBlock *b, size_t size);

/* The sum of several workers' blocks, without device records: counters,
 * gauges and OTA results added, histograms merged. */
MetricsBlock *metrics_totals_new(void);
void metrics_totals_add(MetricsBlock *totals, const MetricsBlock *b);

static inline void metrics_count(MetricsBlock *b, MetricCounter c, uint64_t n) {
        if (b)
                b->counters[c] += n;
}

static inline void metrics_observe(MetricsBlock *b, MetricHistogram h, uint64_t value) {
        if (b)
                histogram_record(&b->histograms[h], value);
}

void metrics_connect_failed(MetricsBlock *b, unsigned reason);
void metrics_disconnected(MetricsBlock *b, unsigned reason);
void metrics_ota_result(MetricsBlock *b, int err);

/* Writer side of a device record: begin/end bracket every change. */
void metrics_device_begin(MetricsDevice *d);
void metrics_device_end(MetricsDevice *d);
/* Copies a consistent snapshot of `src` (retries while the writer is inside). */
void metrics_device_read(const MetricsDevice *src, MetricsDevice *ret);
/* Sets a fixed-size string field (truncates, always NUL-terminated). */
void metrics_set_string(char *field, size_t size, const char *value);
#define metrics_set_field(field, value) metrics_set_string((field), sizeof(field), (value))
