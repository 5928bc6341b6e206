/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "sim/scenario.h"

static void check(ReportCheck *c, const char *name, double value, double threshold, bool passed) {
        snprintf(c->name, sizeof c->name, "%s", name);
        c->value = value;
        c->threshold = threshold;
        c->passed = passed;
}

static uint64_t ota_failures(const MetricsBlock *t) {
        uint64_t n = 0;
        for (size_t i = 0; i < METRIC_OTA_RESULT_SLOTS; i++)
                if (t->ota_results[i].used && t->ota_results[i].code != 0)
                        n += t->ota_results[i].count;
        return n;
}

size_t scenario_evaluate(const DaemonConfig *c, const MetricsBlock *totals, uint64_t n_devices, uint64_t online,
                         ReportCheck *checks) {
        size_t n = 0;
        char name[96];

        if (c->pass_online_min_percent >= 0) {
                double pct = n_devices ? 100.0 * (double) online / (double) n_devices : 0;
                snprintf(name, sizeof name, "online >= %g %%", c->pass_online_min_percent);
                check(&checks[n++], name, pct, c->pass_online_min_percent, pct >= c->pass_online_min_percent);
        }
        if (c->pass_connect_p99_max_ms >= 0) {
                const Histogram *h = &totals->histograms[METRIC_CONNECT];
                double v = (double) histogram_percentile(h, 99) / 1e3;
                snprintf(name, sizeof name, "connect p99 <= %g ms", c->pass_connect_p99_max_ms);
                /* no connection at all is no evidence of speed */
                check(&checks[n++], name, v, c->pass_connect_p99_max_ms,
                      histogram_count(h) > 0 && v <= c->pass_connect_p99_max_ms);
        }
        if (c->pass_connack_p99_max_ms >= 0) {
                const Histogram *h = &totals->histograms[METRIC_CONNACK];
                double v = (double) histogram_percentile(h, 99) / 1e3;
                snprintf(name, sizeof name, "CONNACK p99 <= %g ms", c->pass_connack_p99_max_ms);
                check(&checks[n++], name, v, c->pass_connack_p99_max_ms,
                      histogram_count(h) > 0 && v <= c->pass_connack_p99_max_ms);
        }
        if (c->pass_ota_failures_max >= 0) {
                double v = (double) ota_failures(totals);
                snprintf(name, sizeof name, "OTA failures <= %g", c->pass_ota_failures_max);
                check(&checks[n++], name, v, c->pass_ota_failures_max, v <= c->pass_ota_failures_max);
        }
        return n;
}

bool scenario_passed(const ReportCheck *checks, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!checks[i].passed)
                        return false;
        return true;
}
