/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "metrics/metrics-json.h"
#include "metrics/metrics-prometheus.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

int metrics_json_add(json_object *o, const char *key, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int add(json_object *o, const char *key, json_object *v) {
        return metrics_json_add(o, key, v);
}

static int add_null(json_object *o, const char *key) {
        return json_object_object_add(o, key, NULL) < 0 ? -ENOMEM : 0;
}

int metrics_json_append(json_object *a, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_array_add(a, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int append(json_object *a, json_object *v) {
        return metrics_json_append(a, v);
}

/* The length of the UTF-8 sequence at p (RFC 3629 §4: no overlong forms, no
 * surrogates, nothing above U+10FFFF), 0 if there is none. */
static size_t utf8_sequence(const uint8_t *p, size_t left) {
        uint8_t lo = 0x80, hi = 0xbf;
        size_t n;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                n = 2;
        else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                n = 3;
                if (p[0] == 0xe0)
                        lo = 0xa0;
                else if (p[0] == 0xed)
                        hi = 0x9f;
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                n = 4;
                if (p[0] == 0xf0)
                        lo = 0x90;
                else if (p[0] == 0xf4)
                        hi = 0x8f;
        } else
                return 0;
        if (left < n || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
        return n;
}

/* `s` as a JSON string, every byte that starts no UTF-8 sequence replaced by
 * '?': json-c copies bytes as they are, and a record's strings may come from
 * a downloaded image. */
static json_object *text(const char *s) {
        _cleanup_free_ char *copy = strdup(s);

        if (!copy)
                return NULL;
        size_t len = strlen(copy);
        for (size_t i = 0; i < len;) {
                size_t n = utf8_sequence((const uint8_t *) copy + i, len - i);
                if (n == 0) {
                        copy[i++] = '?';
                        continue;
                }
                i += n;
        }
        return json_object_new_string_len(copy, (int) len);
}

/* An empty record string is "not known yet": a JSON null. */
static int add_text_or_null(json_object *o, const char *key, const char *s) {
        return s && *s ? add(o, key, text(s)) : add_null(o, key);
}

/* Seconds with the µs of the records, written from the integers so that
 * 1500 µs is 0.0015 and not 0.0015000000000000000312. */
json_object *metrics_seconds_json(uint64_t usec) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%" PRIu64 ".%06" PRIu64, usec / 1000000, usec % 1000000);

        while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.')
                buf[--n] = 0;
        return json_object_new_double_s((double) usec / 1e6, buf);
}

char *metrics_format_time(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;

        if (!gmtime_r(&t, &tm)) {
                snprintf(buf, size, "@%" PRIu64, usec / 1000000);
                return buf;
        }
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned) (usec % 1000000 / 1000));
        return buf;
}

static json_object *iso_time(uint64_t usec) {
        char buf[METRICS_ISO_TIME_MAX];

        return json_object_new_string(metrics_format_time(usec, buf, sizeof buf));
}

static json_object *ota_record_json(const MetricsOtaRecord *h) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        if ((h->at_usec ? add(o, "at", iso_time(h->at_usec)) : add_null(o, "at")) < 0 ||
            add(o, "result", json_object_new_string(esp_err_to_name(h->error))) < 0 ||
            add_text_or_null(o, "version", h->version) < 0 ||
            add(o, "duration_s", metrics_seconds_json((uint64_t) h->duration_ms * 1000)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

static json_object *ota_json(const MetricsDevice *d) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        size_t n = MIN((size_t) d->ota_count, (size_t) METRICS_OTA_HISTORY);

        if (!o)
                return NULL;
        if (add(o, "count", json_object_new_int64(d->ota_count)) < 0 ||
            add(o, "active", json_object_new_boolean(d->ota_active != 0)) < 0)
                return NULL;
        if (d->ota_count > 0) {
                const MetricsOtaRecord *newest = &d->ota_history[(d->ota_count - 1) % METRICS_OTA_HISTORY];
                if (add(o, "result", json_object_new_string(esp_err_to_name(newest->error))) < 0)
                        return NULL;
        } else if (add_null(o, "result") < 0)
                return NULL;

        json_object *history = json_object_new_array_ext((int) n);
        if (add(o, "history", history) < 0)
                return NULL;
        /* ota_count % METRICS_OTA_HISTORY is the slot the next outcome takes:
         * the oldest one kept is n slots before it */
        for (size_t i = 0; i < n; i++) {
                size_t slot = ((size_t) d->ota_count - n + i) % METRICS_OTA_HISTORY;
                if (append(history, ota_record_json(&d->ota_history[slot])) < 0)
                        return NULL;
        }
        return TAKE_PTR(o);
}

json_object *metrics_device_json(const MetricsDevice *d, const char *state_name, unsigned worker) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        bool connected = d->connects > 0;

        if (!o)
                return NULL;
        if (add(o, "id", text(d->id)) < 0 ||
            add(o, "worker", json_object_new_int64(worker)) < 0 ||
            (state_name ? add(o, "state", json_object_new_string(state_name)) : add_null(o, "state")) < 0 ||
            (d->state_since_usec ? add(o, "state_since", iso_time(d->state_since_usec))
                                 : add_null(o, "state_since")) < 0 ||
            add_text_or_null(o, "broker", d->broker) < 0 ||
            add(o, "connects", json_object_new_int64(d->connects)) < 0 ||
            add(o, "connect_failures", json_object_new_int64(d->connect_failures)) < 0 ||
            add(o, "disconnects", json_object_new_int64(d->disconnects)) < 0 ||
            add(o, "reboots", json_object_new_int64(d->reboots)) < 0 ||
            add(o, "rollbacks", json_object_new_int64(d->rollbacks)) < 0 ||
            add_text_or_null(o, "version", d->version) < 0 ||
            (connected ? add(o, "last_connect_s", metrics_seconds_json(d->last_connect_usec))
                       : add_null(o, "last_connect_s")) < 0 ||
            (connected ? add(o, "max_connect_s", metrics_seconds_json(d->max_connect_usec))
                       : add_null(o, "max_connect_s")) < 0 ||
            add_text_or_null(o, "last_error", d->last_error) < 0)
                return NULL;
        if (d->last_error[0] && d->last_error_usec && add(o, "last_error_at", iso_time(d->last_error_usec)) < 0)
                return NULL;
        if (add(o, "ota", ota_json(d)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* A histogram's value: seconds for durations, an integer otherwise. */
static json_object *histogram_value(uint64_t v, bool time) {
        return time ? metrics_seconds_json(v) : json_object_new_uint64(v);
}

static json_object *histogram_json(const Histogram *h, bool time) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        static const struct {
                const char *key;
                double p;
        } percentiles[] = { { "p50", 50 }, { "p90", 90 }, { "p99", 99 }, { "p99.9", 99.9 } };
        uint64_t count = histogram_count(h);

        if (!o)
                return NULL;
        if (add(o, "unit", json_object_new_string(time ? "seconds" : "bytes_per_second")) < 0 ||
            add(o, "count", json_object_new_uint64(count)) < 0)
                return NULL;
        if (count == 0)
                return TAKE_PTR(o);

        /* the writer is another process: total and sum may be a value apart */
        uint64_t total = h->total, mean = total > 0 ? (h->sum + total / 2) / total : 0;
        if (add(o, "min", histogram_value(h->min, time)) < 0 || add(o, "mean", histogram_value(mean, time)) < 0)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(percentiles); i++)
                if (add(o, percentiles[i].key, histogram_value(histogram_percentile(h, percentiles[i].p), time)) < 0)
                        return NULL;
        if (add(o, "max", histogram_value(h->max, time)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

json_object *metrics_histograms_json(const MetricsBlock *totals) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (MetricHistogram h = 0; h < _METRIC_HISTOGRAM_MAX; h++)
                if (add(o, metrics_histogram_key(h),
                        histogram_json(&totals->histograms[h], metrics_histogram_is_time(h))) < 0)
                        return NULL;
        return TAKE_PTR(o);
}

/* Adds n to the count under `key` (two slots may share a name). */
static int add_count(json_object *o, const char *key, uint64_t n) {
        json_object *v;

        if (json_object_object_get_ex(o, key, &v))
                return json_object_set_uint64(v, json_object_get_uint64(v) + n) ? 0 : -EINVAL;
        return add(o, key, json_object_new_uint64(n));
}

static json_object *reasons_json(const uint64_t *counts) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        char buf[64];

        if (!o)
                return NULL;
        for (unsigned r = 0; r < METRIC_REASON_SLOTS; r++) {
                if (counts[r] == 0)
                        continue;
                const char *name = metrics_reason_name(r, buf, sizeof buf);
                if (add_count(o, name ?: "other", counts[r]) < 0)
                        return NULL;
        }
        return TAKE_PTR(o);
}

static json_object *ota_results_json(const MetricsBlock *t) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (size_t i = 0; i < METRIC_OTA_RESULT_SLOTS; i++) {
                const MetricsOtaResult *s = &t->ota_results[i];
                if (!__atomic_load_n(&s->used, __ATOMIC_ACQUIRE))
                        break;
                if (add_count(o, i == METRIC_OTA_RESULT_SLOTS - 1 ? "other" : esp_err_to_name(s->code), s->count) < 0)
                        return NULL;
        }
        return TAKE_PTR(o);
}

json_object *metrics_counters_json(const MetricsBlock *totals) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (MetricCounter c = 0; c < _METRIC_COUNTER_MAX; c++)
                if (add(o, metrics_counter_key(c), json_object_new_uint64(totals->counters[c])) < 0)
                        return NULL;
        if (add(o, "connect_failures", reasons_json(totals->connect_failures)) < 0 ||
            add(o, "disconnects", reasons_json(totals->disconnects)) < 0 ||
            add(o, "ota_results", ota_results_json(totals)) < 0)
                return NULL;
        return TAKE_PTR(o);
}
