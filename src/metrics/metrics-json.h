/* SPDX-License-Identifier: MIT */
#pragma once

/* The metrics as JSON (json-c trees), for the control socket (`espfleet
 * status`, `espfleet top`) and the reports: one device record, the
 * histograms' summaries and the counters of a sum of metrics blocks.
 *
 * Durations are in seconds (the blocks hold µs), times are ISO 8601 UTC
 * with milliseconds ("2025-03-01T12:00:00.123Z"). Strings taken from the
 * records (a firmware version read from a downloaded image, an error text)
 * are made valid UTF-8, so the output is valid JSON whatever they hold.
 *
 * Every function returns a new reference, or NULL when json-c cannot
 * allocate; none of them logs. */

#include <json-c/json.h>

#include "metrics/metrics.h"

/* {"id","worker","state","state_since","broker","connects","connect_failures",
 *  "disconnects","reboots","rollbacks","version","last_connect_s","max_connect_s",
 *  "last_error","last_error_at","ota":{"count","active","result","history":[…]}}
 *
 * `d` is a snapshot (metrics_device_read()). `state_name` names d->state
 * (device_state_to_string(), which this module cannot see); NULL gives a JSON
 * null. last_connect_s and max_connect_s are null before the first
 * connection, last_error is null and last_error_at absent while there was no
 * error, ota.result is the esp_err_to_name() of the newest outcome (null
 * before the first) and ota.history holds the last METRICS_OTA_HISTORY
 * outcomes, oldest first: {"at","result","version","duration_s"}. */
json_object *metrics_device_json(const MetricsDevice *d, const char *state_name, unsigned worker);

/* {"<metrics_histogram_key()>": {"unit":"seconds"|"bytes_per_second","count":N,
 *  "min","mean","p50","p90","p99","p99.9","max"}, …}: every histogram; one
 * with nothing counted has only "unit" and "count". Time histograms are in
 * seconds, the throughput in bytes per second (integers). */
json_object *metrics_histograms_json(const MetricsBlock *totals);

/* {"<metrics_counter_key()>": n, … every MetricCounter,
 *  "connect_failures": {"<metrics_reason_name()>": n, …},
 *  "disconnects": {…}, "ota_results": {"<esp_err_to_name()>": n, …}}.
 * The reason and result objects list only what was counted; the last OTA
 * result slot (every code past the others) is "other". */
json_object *metrics_counters_json(const MetricsBlock *totals);

/* A duration in µs as seconds, written from the integers ("0.0015", "2.0"). */
json_object *metrics_seconds_json(uint64_t usec);

/* Adds `v` under `key`, taking it in every case (freed on failure); a NULL
 * `v` is a json-c constructor that ran out of memory. 0 or -ENOMEM. */
int metrics_json_add(json_object *o, const char *key, json_object *v);
/* The same for an array element. */
int metrics_json_append(json_object *a, json_object *v);

/* Formats a CLOCK_REALTIME time in µs as ISO 8601 UTC with milliseconds.
 * `size` >= METRICS_ISO_TIME_MAX. Returns buf. */
#define METRICS_ISO_TIME_MAX 32
char *metrics_format_time(uint64_t realtime_usec, char *buf, size_t size);
