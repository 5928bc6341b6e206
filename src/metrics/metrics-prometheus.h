/* SPDX-License-Identifier: MIT */
#pragma once

/* The Prometheus text exposition format (version 0.0.4) of the workers'
 * metrics blocks: an espfleet_ prefix, _seconds histograms, _total
 * counters, a `worker` label on every series and a `reason`, `result` or
 * `state` label where a family has one. Histograms are rendered from the
 * HDR counts into fixed `le` buckets. */

#include <stdint.h>
#include <stdio.h>

#include "metrics/metrics.h"

typedef struct MetricsExport {
        MetricsBlock *const *blocks;    /* one per worker, NULL for a worker without one */
        size_t n_blocks;
        bool probe_last;                /* the last block is the probe's: worker="probe" */
        const char *const *state_names; /* DeviceState names, for espfleet_devices{state} */
        size_t n_states;
        const char *version;            /* espfleet's, for espfleet_build_info */
} MetricsExport;

/* The series names, for the dashboard and the docs: "espfleet_connect_seconds", … */
const char *metrics_histogram_name(MetricHistogram h);
/* The report's short name: "connect", "tls_handshake", … */
const char *metrics_histogram_key(MetricHistogram h);
const char *metrics_histogram_help(MetricHistogram h);
/* Whether a histogram holds durations in µs (else bytes per second). */
bool metrics_histogram_is_time(MetricHistogram h);
const char *metrics_counter_key(MetricCounter c);

int metrics_prometheus_write(FILE *f, const MetricsExport *e);
