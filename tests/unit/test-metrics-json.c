/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <json-c/json.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "metrics/metrics-json.h"
#include "metrics/metrics-prometheus.h"

/* 2023-11-14T22:13:20.123456Z */
#define T0 UINT64_C(1700000000123456)

static const char *const device_keys[] = {
        "id", "worker", "state", "state_since", "broker", "connects", "connect_failures", "disconnects", "reboots",
        "rollbacks", "version", "last_connect_s", "max_connect_s", "last_error", "ota",
        "last_error_at",        /* last: only while there is an error */
};

static json_object *get(json_object *o, const char *key) {
        json_object *v = NULL;

        cr_assert(json_object_object_get_ex(o, key, &v), "no key '%s' in %s", key, json_object_to_json_string(o));
        return v;
}

static bool has(json_object *o, const char *key) {
        return json_object_object_get_ex(o, key, NULL);
}

static void assert_string(json_object *o, const char *key, const char *want) {
        json_object *v = get(o, key);

        cr_assert(json_object_is_type(v, json_type_string), "'%s' is not a string", key);
        cr_assert_str_eq(json_object_get_string(v), want, "'%s'", key);
}

static void assert_int(json_object *o, const char *key, int64_t want) {
        json_object *v = get(o, key);

        cr_assert(json_object_is_type(v, json_type_int), "'%s' is not an integer", key);
        cr_assert_eq(json_object_get_int64(v), want, "'%s' = %" PRId64 ", want %" PRId64, key,
                     json_object_get_int64(v), want);
}

static void assert_null(json_object *o, const char *key) {
        cr_assert(json_object_is_type(get(o, key), json_type_null), "'%s' is not null", key);
}

/* The number as it is written out (json-c keeps the text of a double made with _s). */
static void assert_number_text(json_object *o, const char *key, const char *want) {
        json_object *v = get(o, key);

        cr_assert(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int),
                  "'%s' is not a number", key);
        cr_assert_str_eq(json_object_to_json_string(v), want, "'%s'", key);
}

/* The keys of `o` are exactly `keys` (any order). */
static void assert_keys(json_object *o, const char *const *keys, size_t n) {
        cr_assert_eq((size_t) json_object_object_length(o), n, "%d keys, want %zu: %s", json_object_object_length(o),
                     n, json_object_to_json_string(o));
        for (size_t i = 0; i < n; i++)
                cr_assert(has(o, keys[i]), "no key '%s'", keys[i]);
}

/* Serializes and parses back: what a client of the control socket sees. */
static json_object *round_trip(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        json_object *back = json_tokener_parse(s);

        cr_assert_not_null(back, "not JSON: %s", s);
        json_object_put(o);
        return back;
}

Test(metrics_json, time_format) {
        char buf[METRICS_ISO_TIME_MAX];

        cr_assert_str_eq(metrics_format_time(0, buf, sizeof buf), "1970-01-01T00:00:00.000Z");
        cr_assert_str_eq(metrics_format_time(T0, buf, sizeof buf), "2023-11-14T22:13:20.123Z");
        cr_assert_str_eq(metrics_format_time(UINT64_C(951782400999999), buf, sizeof buf), "2000-02-29T00:00:00.999Z");
}

Test(metrics_json, device_fresh) {
        MetricsDevice d = {};

        metrics_set_field(d.id, "esp-000001");
        json_object *o = round_trip(metrics_device_json(&d, "off", 2));

        /* no error yet: last_error_at is absent, everything else is there */
        assert_keys(o, device_keys, ELEMENTSOF(device_keys) - 1);
        cr_assert(!has(o, "last_error_at"));
        assert_string(o, "id", "esp-000001");
        assert_int(o, "worker", 2);
        assert_string(o, "state", "off");
        assert_null(o, "state_since");
        assert_null(o, "broker");
        assert_null(o, "version");
        assert_null(o, "last_connect_s");
        assert_null(o, "max_connect_s");
        assert_null(o, "last_error");
        assert_int(o, "connects", 0);

        json_object *ota = get(o, "ota");
        static const char *const ota_keys[] = { "count", "active", "result", "history" };
        assert_keys(ota, ota_keys, ELEMENTSOF(ota_keys));
        assert_int(ota, "count", 0);
        cr_assert(json_object_is_type(get(ota, "active"), json_type_boolean));
        cr_assert(!json_object_get_boolean(get(ota, "active")));
        assert_null(ota, "result");
        cr_assert(json_object_is_type(get(ota, "history"), json_type_array));
        cr_assert_eq(json_object_array_length(get(ota, "history")), 0);
        json_object_put(o);
}

Test(metrics_json, device_full) {
        MetricsDevice d = {
                .state = 3,
                .ota_active = 1,
                .connects = 3,
                .connect_failures = 2,
                .disconnects = 1,
                .reboots = 4,
                .rollbacks = 1,
                .state_since_usec = T0,
                .last_connect_usec = 1500,
                .max_connect_usec = 2000000,
                .last_error_usec = T0 + 1000,
        };

        metrics_set_field(d.id, "esp-a1b2c3");
        metrics_set_field(d.broker, "127.0.0.1:8883");
        metrics_set_field(d.version, "1.2.3");
        /* a stray Latin-1 byte, a surrogate (ED A0 80) and a good "é" (C3 A9) */
        metrics_set_field(d.last_error, "tcp_refused \xe9 \xed\xa0\x80 caf\xc3\xa9");
        json_object *o = round_trip(metrics_device_json(&d, "online", 0));

        assert_keys(o, device_keys, ELEMENTSOF(device_keys));
        assert_string(o, "id", "esp-a1b2c3");
        assert_string(o, "state", "online");
        assert_string(o, "state_since", "2023-11-14T22:13:20.123Z");
        assert_string(o, "broker", "127.0.0.1:8883");
        assert_string(o, "version", "1.2.3");
        assert_int(o, "connects", 3);
        assert_int(o, "connect_failures", 2);
        assert_int(o, "disconnects", 1);
        assert_int(o, "reboots", 4);
        assert_int(o, "rollbacks", 1);
        assert_number_text(o, "last_connect_s", "0.0015");
        assert_number_text(o, "max_connect_s", "2.0");
        assert_string(o, "last_error", "tcp_refused ? ??? caf\xc3\xa9");
        assert_string(o, "last_error_at", "2023-11-14T22:13:20.124Z");
        cr_assert(json_object_get_boolean(get(get(o, "ota"), "active")));
        json_object_put(o);
}

Test(metrics_json, state_unknown_is_null) {
        MetricsDevice d = {};
        json_object *o = metrics_device_json(&d, NULL, 0);

        cr_assert_not_null(o);
        assert_null(o, "state");
        json_object_put(o);
}

/* Six outcomes in four slots: the last four, oldest first. */
Test(metrics_json, ota_history_wraps) {
        static const int errors[] = { 0, -ESP_ERR_OTA_VALIDATE_FAILED, 0, -ESP_ERR_NOT_FOUND, 0, -ETIMEDOUT };
        MetricsDevice d = {};

        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                MetricsOtaRecord *h = &d.ota_history[d.ota_count % METRICS_OTA_HISTORY];
                h->at_usec = T0 + i * 1000000;
                h->error = errors[i];
                h->duration_ms = (uint32_t) (1000 * i + 250);
                snprintf(h->version, sizeof h->version, "1.0.%zu", i);
                d.ota_count++;
        }
        json_object *o = round_trip(metrics_device_json(&d, "online", 0));
        json_object *ota = get(o, "ota");

        assert_int(ota, "count", 6);
        assert_string(ota, "result", "ETIMEDOUT");
        json_object *history = get(ota, "history");
        cr_assert_eq(json_object_array_length(history), METRICS_OTA_HISTORY);
        for (size_t k = 0; k < METRICS_OTA_HISTORY; k++) {
                size_t i = ELEMENTSOF(errors) - METRICS_OTA_HISTORY + k;
                json_object *e = json_object_array_get_idx(history, k);
                static const char *const keys[] = { "at", "result", "version", "duration_s" };
                char at[METRICS_ISO_TIME_MAX], version[16], duration[16];

                assert_keys(e, keys, ELEMENTSOF(keys));
                assert_string(e, "at", metrics_format_time(T0 + i * 1000000, at, sizeof at));
                assert_string(e, "result", esp_err_to_name(errors[i]));
                snprintf(version, sizeof version, "1.0.%zu", i);
                assert_string(e, "version", version);
                snprintf(duration, sizeof duration, "%zu.25", i);
                assert_number_text(e, "duration_s", duration);
        }
        json_object_put(o);
}

Test(metrics_json, histograms_empty) {
        MetricsBlock *b = metrics_totals_new();
        static const char *const keys[] = { "unit", "count" };

        cr_assert_not_null(b);
        json_object *o = round_trip(metrics_histograms_json(b));
        cr_assert_eq(json_object_object_length(o), _METRIC_HISTOGRAM_MAX);
        for (MetricHistogram h = 0; h < _METRIC_HISTOGRAM_MAX; h++) {
                json_object *e = get(o, metrics_histogram_key(h));
                assert_keys(e, keys, ELEMENTSOF(keys));
                assert_string(e, "unit", metrics_histogram_is_time(h) ? "seconds" : "bytes_per_second");
                assert_int(e, "count", 0);
        }
        json_object_put(o);
        free(b);
}

Test(metrics_json, histograms_values) {
        MetricsBlock *b = metrics_totals_new();
        static const char *const keys[] = { "unit", "count", "min", "mean", "p50", "p90", "p99", "p99.9", "max" };

        cr_assert_not_null(b);
        /* below 2048 every value has a bucket of its own: the percentiles are exact */
        for (uint64_t v = 1; v <= 1000; v++)
                metrics_observe(b, METRIC_CONNECT, v);
        metrics_observe(b, METRIC_OTA_THROUGHPUT, 1000);
        metrics_observe(b, METRIC_OTA_THROUGHPUT, 1500);
        json_object *o = round_trip(metrics_histograms_json(b));

        json_object *c = get(o, "connect");
        assert_keys(c, keys, ELEMENTSOF(keys));
        assert_string(c, "unit", "seconds");
        assert_int(c, "count", 1000);
        assert_number_text(c, "min", "0.000001");
        assert_number_text(c, "mean", "0.000501");  /* 500.5 µs, rounded */
        assert_number_text(c, "p50", "0.0005");
        assert_number_text(c, "p90", "0.0009");
        assert_number_text(c, "p99", "0.00099");
        assert_number_text(c, "p99.9", "0.000999");
        assert_number_text(c, "max", "0.001");

        json_object *t = get(o, "ota_throughput");
        assert_string(t, "unit", "bytes_per_second");
        assert_int(t, "count", 2);
        assert_int(t, "min", 1000);
        assert_int(t, "mean", 1250);
        assert_int(t, "max", 1500);

        assert_int(get(o, "tls_handshake"), "count", 0);
        cr_assert(!has(get(o, "tls_handshake"), "p50"));
        json_object_put(o);
        free(b);
}

Test(metrics_json, counters) {
        MetricsBlock *a = metrics_totals_new(), *b = metrics_totals_new(), *t = metrics_totals_new();

        cr_assert(a && b && t);
        for (MetricCounter c = 0; c < _METRIC_COUNTER_MAX; c++) {
                metrics_count(a, c, 10 + c);
                metrics_count(b, c, 100 * c);
        }
        metrics_connect_failed(a, METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_REFUSED));
        metrics_connect_failed(b, METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_TCP_REFUSED));
        metrics_connect_failed(b, METRIC_REASON(METRIC_REASON_TLS_ALERT, 42));
        metrics_disconnected(a, METRIC_REASON(METRIC_REASON_GENERIC, METRIC_REASON_POWER_CUT));
        metrics_ota_result(a, 0);
        metrics_ota_result(b, 0);
        metrics_ota_result(b, -ESP_ERR_OTA_VALIDATE_FAILED);
        metrics_totals_add(t, a);
        metrics_totals_add(t, b);
        json_object *o = round_trip(metrics_counters_json(t));

        cr_assert_eq(json_object_object_length(o), _METRIC_COUNTER_MAX + 3);
        for (MetricCounter c = 0; c < _METRIC_COUNTER_MAX; c++)
                assert_int(o, metrics_counter_key(c), 10 + c + 100 * c);
        assert_int(o, "connect_attempts", 10);
        assert_int(o, "reboots", 10 + METRIC_REBOOTS * 101);

        json_object *f = get(o, "connect_failures");
        cr_assert_eq(json_object_object_length(f), 2);
        assert_int(f, "tcp_refused", 2);
        assert_int(f, "tls_alert_bad_certificate", 1);
        json_object *d = get(o, "disconnects");
        cr_assert_eq(json_object_object_length(d), 1);
        assert_int(d, "power_cut", 1);
        json_object *r = get(o, "ota_results");
        cr_assert_eq(json_object_object_length(r), 2);
        assert_int(r, "ESP_OK", 2);
        assert_int(r, "ESP_ERR_OTA_VALIDATE_FAILED", 1);
        json_object_put(o);
        free(a);
        free(b);
        free(t);
}
