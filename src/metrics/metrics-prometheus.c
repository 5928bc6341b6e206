/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "metrics/metrics-prometheus.h"

static const struct {
        const char *key, *help;
        bool time;
} histogram_table[_METRIC_HISTOGRAM_MAX] = {
        [METRIC_CONNECT] = { "connect", "Connection due (ramp slot or backoff end) to CONNACK", true },
        [METRIC_TCP_CONNECT] = { "tcp_connect", "Connection due to TCP established", true },
        [METRIC_TLS_HANDSHAKE] = { "tls_handshake", "TCP established to TLS handshake done", true },
        [METRIC_DS_SIGN] = { "ds_sign", "One Digital Signature peripheral operation", true },
        [METRIC_CONNACK] = { "connack", "CONNECT sent (handshake done) to CONNACK", true },
        [METRIC_SUBACK] = { "suback", "SUBSCRIBE to SUBACK", true },
        [METRIC_PUBACK] = { "puback", "QoS 1 publish due to PUBACK", true },
        [METRIC_COMMAND] = { "command", "Command seen on /esp/... to the device's next log line (probe)", true },
        [METRIC_TELEMETRY] = { "telemetry", "Telemetry reading due to received by the probe", true },
        [METRIC_OTA_TTFB] = { "ota_ttfb", "OTA download started to first body byte", true },
        [METRIC_OTA_DOWNLOAD] = { "ota_download", "OTA download started to image complete", true },
        [METRIC_OTA_THROUGHPUT] = { "ota_throughput", "Throughput of complete OTA downloads", false },
        [METRIC_OTA_VERIFY] = { "ota_verify", "OTA image complete to verified and selected", true },
        [METRIC_OTA_RUN_TO_ONLINE] = { "ota_run_to_online", "/esp/update/run to online with the new version", true },
};

static const struct {
        const char *key, *name, *help;
} counter_table[_METRIC_COUNTER_MAX] = {
        [METRIC_CONNECT_ATTEMPTS] = { "connect_attempts", "espfleet_connect_attempts_total", "Connections started" },
        [METRIC_CONNECTS] = { "connects", "espfleet_connects_total", "Connections accepted (CONNACK 0)" },
        [METRIC_MESSAGES_IN] = { "messages_in", "espfleet_messages_received_total", "PUBLISH packets received by devices" },
        [METRIC_MESSAGES_OUT] = { "messages_out", "espfleet_messages_sent_total", "PUBLISH packets sent by devices" },
        [METRIC_REBOOTS] = { "reboots", "espfleet_reboots_total", "Device resets" },
        [METRIC_ROLLBACKS] = { "rollbacks", "espfleet_rollbacks_total", "Boots that rolled back to the previous app" },
        [METRIC_OTA_STARTED] = { "ota_started", "espfleet_ota_downloads_started_total", "OTA downloads started" },
        [METRIC_OTA_BYTES] = { "ota_bytes", "espfleet_ota_downloaded_bytes_total", "OTA body bytes downloaded" },
        [METRIC_PROBE_MESSAGES] = { "probe_messages", "espfleet_probe_messages_received_total", "Messages the probe received" },
};

const char *metrics_histogram_key(MetricHistogram h) {
        return h < _METRIC_HISTOGRAM_MAX ? histogram_table[h].key : NULL;
}

const char *metrics_histogram_help(MetricHistogram h) {
        return h < _METRIC_HISTOGRAM_MAX ? histogram_table[h].help : NULL;
}

bool metrics_histogram_is_time(MetricHistogram h) {
        return h < _METRIC_HISTOGRAM_MAX && histogram_table[h].time;
}

const char *metrics_histogram_name(MetricHistogram h) {
        static char names[_METRIC_HISTOGRAM_MAX][64];

        if (h >= _METRIC_HISTOGRAM_MAX)
                return NULL;
        if (!names[h][0])
                snprintf(names[h], sizeof names[h], "espfleet_%s_%s", histogram_table[h].key,
                         histogram_table[h].time ? "seconds" : "bytes_per_second");
        return names[h];
}

const char *metrics_counter_key(MetricCounter c) {
        return c < _METRIC_COUNTER_MAX ? counter_table[c].key : NULL;
}

/* Bucket bounds, µs for durations and bytes/s for throughput. */
static const uint64_t time_bounds[] = {
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
        1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 120000000, 300000000,
};
static const uint64_t rate_bounds[] = {
        10000, 100000, 1000000, 10000000, 100000000, 1000000000,
};

/* The worker label of block w: its index, or "probe" for the probe's. */
static const char *wlabel(const MetricsExport *e, size_t w) {
        static char buf[24];

        if (e->probe_last && w + 1 == e->n_blocks)
                return "probe";
        snprintf(buf, sizeof buf, "%zu", w);
        return buf;
}

static bool is_probe(const MetricsExport *e, size_t w) {
        return e->probe_last && w + 1 == e->n_blocks;
}

static void write_header(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void write_le(FILE *f, uint64_t v, bool time) {
        if (time)
                fprintf(f, "%g", (double) v / 1e6);
        else
                fprintf(f, "%" PRIu64, v);
}

static void write_histogram(FILE *f, const MetricsExport *e, MetricHistogram h) {
        const char *name = metrics_histogram_name(h);
        bool time = histogram_table[h].time;
        const uint64_t *bounds = time ? time_bounds : rate_bounds;
        size_t n_bounds = time ? ELEMENTSOF(time_bounds) : ELEMENTSOF(rate_bounds);

        write_header(f, name, "histogram", histogram_table[h].help);
        for (size_t w = 0; w < e->n_blocks; w++) {
                const MetricsBlock *b = e->blocks[w];
                if (!b)
                        continue;
                const Histogram *hist = &b->histograms[h];
                /* one count for every line: the buckets must not go down while being written */
                uint64_t count = histogram_count(hist), last = 0;
                for (size_t i = 0; i < n_bounds; i++) {
                        uint64_t c = MIN(histogram_count_le(hist, bounds[i]), count);
                        c = MAX(c, last);
                        last = c;
                        fprintf(f, "%s_bucket{worker=\"%s\",le=\"", name, wlabel(e, w));
                        write_le(f, bounds[i], time);
                        fprintf(f, "\"} %" PRIu64 "\n", c);
                }
                fprintf(f, "%s_bucket{worker=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, wlabel(e, w), count);
                if (time)
                        fprintf(f, "%s_sum{worker=\"%s\"} %.6f\n", name, wlabel(e, w), (double) hist->sum / 1e6);
                else
                        fprintf(f, "%s_sum{worker=\"%s\"} %" PRIu64 "\n", name, wlabel(e, w), hist->sum);
                fprintf(f, "%s_count{worker=\"%s\"} %" PRIu64 "\n", name, wlabel(e, w), count);
        }
}

static void write_reasons(FILE *f, const MetricsExport *e, const char *name, const char *help, size_t offset) {
        char buf[64];

        write_header(f, name, "counter", help);
        for (size_t w = 0; w < e->n_blocks; w++) {
                const MetricsBlock *b = e->blocks[w];
                if (!b)
                        continue;
                const uint64_t *v = (const uint64_t *) ((const uint8_t *) b + offset);
                for (unsigned r = 0; r < METRIC_REASON_SLOTS; r++) {
                        if (v[r] == 0)
                                continue;
                        const char *n = metrics_reason_name(r, buf, sizeof buf);
                        if (n)
                                fprintf(f, "%s{worker=\"%s\",reason=\"%s\"} %" PRIu64 "\n", name, wlabel(e, w), n, v[r]);
                }
        }
}

int metrics_prometheus_write(FILE *f, const MetricsExport *e) {
        write_header(f, "espfleet_build_info", "gauge", "espfleet's version");
        fprintf(f, "espfleet_build_info{version=\"%s\"} 1\n", e->version ?: "unknown");

        write_header(f, "espfleet_worker_starts_total", "counter", "Worker processes started");
        for (size_t w = 0; w < e->n_blocks; w++)
                if (e->blocks[w] && !is_probe(e, w))
                        fprintf(f, "espfleet_worker_starts_total{worker=\"%s\"} %" PRIu64 "\n", wlabel(e, w),
                                e->blocks[w]->worker_starts);

        for (MetricCounter c = 0; c < _METRIC_COUNTER_MAX; c++) {
                write_header(f, counter_table[c].name, "counter", counter_table[c].help);
                for (size_t w = 0; w < e->n_blocks; w++)
                        if (e->blocks[w])
                                fprintf(f, "%s{worker=\"%s\"} %" PRIu64 "\n", counter_table[c].name, wlabel(e, w),
                                        e->blocks[w]->counters[c]);
        }
        write_reasons(f, e, "espfleet_connect_failures_total", "Connection attempts that failed, by reason",
                      offsetof(MetricsBlock, connect_failures));
        write_reasons(f, e, "espfleet_disconnects_total", "Connections that ended, by reason",
                      offsetof(MetricsBlock, disconnects));

        write_header(f, "espfleet_ota_outcomes_total", "counter", "OTA outcomes by ESP-IDF error name");
        for (size_t w = 0; w < e->n_blocks; w++) {
                const MetricsBlock *b = e->blocks[w];
                if (!b)
                        continue;
                for (size_t i = 0; i < METRIC_OTA_RESULT_SLOTS; i++) {
                        const MetricsOtaResult *s = &b->ota_results[i];
                        if (!__atomic_load_n(&s->used, __ATOMIC_ACQUIRE))
                                break;
                        fprintf(f, "espfleet_ota_outcomes_total{worker=\"%s\",result=\"%s\"} %" PRIu64 "\n", wlabel(e, w),
                                i == METRIC_OTA_RESULT_SLOTS - 1 ? "other" : esp_err_to_name(s->code), s->count);
                }
        }

        write_header(f, "espfleet_devices", "gauge", "Devices in each state");
        for (size_t w = 0; w < e->n_blocks; w++) {
                const MetricsBlock *b = e->blocks[w];
                if (!b || is_probe(e, w))
                        continue;
                for (size_t s = 0; s < e->n_states && s < METRIC_STATE_SLOTS; s++)
                        fprintf(f, "espfleet_devices{worker=\"%s\",state=\"%s\"} %" PRIu64 "\n", wlabel(e, w),
                                e->state_names[s], b->devices_in_state[s]);
        }
        write_header(f, "espfleet_ota_downloads_active", "gauge", "OTA downloads running");
        for (size_t w = 0; w < e->n_blocks; w++)
                if (e->blocks[w] && !is_probe(e, w))
                        fprintf(f, "espfleet_ota_downloads_active{worker=\"%s\"} %" PRIu64 "\n", wlabel(e, w),
                                e->blocks[w]->downloads_active);
        write_header(f, "espfleet_ota_downloads_queued", "gauge", "Devices waiting for a download slot");
        for (size_t w = 0; w < e->n_blocks; w++)
                if (e->blocks[w] && !is_probe(e, w))
                        fprintf(f, "espfleet_ota_downloads_queued{worker=\"%s\"} %" PRIu64 "\n", wlabel(e, w),
                                e->blocks[w]->downloads_queued);

        for (MetricHistogram h = 0; h < _METRIC_HISTOGRAM_MAX; h++)
                write_histogram(f, e, h);
        return ferror(f) ? -EIO : 0;
}
