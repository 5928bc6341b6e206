/* SPDX-License-Identifier: MIT */
#pragma once

/* The run report (--report FILE.json, --junit FILE.xml, --report-html FILE):
 * built by the supervisor from the workers' metrics blocks when the run
 * stops (before the devices disconnect, so every device's state is the one
 * it ended the run in) and on SIGUSR1. The JSON's layout is the one
 * metrics/report-html.h renders; docs in README.md ("Reports"). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "metrics/metrics.h"
#include "sim/config.h"

/* Online devices, connects and failed attempts over time, one sample per
 * interval; past TIMELINE_MAX samples, pairs are merged and the interval
 * doubles, so a run of weeks stays a few KB. */
#define TIMELINE_MAX 3600

typedef struct Timeline {
        unsigned interval_s;
        size_t n;
        uint32_t online[TIMELINE_MAX];
        uint32_t connects[TIMELINE_MAX];
        uint32_t failures[TIMELINE_MAX];
        uint64_t last_connects, last_failures;  /* totals at the last sample */
        unsigned pending;                       /* 1 s samples folded into the current slot */
} Timeline;

void timeline_init(Timeline *t);
/* Once a second: the fleet's online count and its cumulative totals. */
void timeline_sample(Timeline *t, uint64_t online, uint64_t connects_total, uint64_t failures_total);

typedef struct ReportCheck {
        char name[96];
        double value, threshold;
        bool passed;
} ReportCheck;

typedef struct ReportInput {
        MetricsBlock *const *blocks;    /* one per worker */
        size_t n_blocks;
        const MetricsBlock *probe;      /* NULL without a probe */
        const DaemonConfig *config;
        const char *config_path;
        uint64_t started_usec, ended_usec;      /* CLOCK_REALTIME */
        const char *reason;             /* "exit", "SIGTERM", "SIGUSR1", "hold" */
        const Timeline *timeline;
        const ReportCheck *checks;      /* pass_if (scenario), may be NULL */
        size_t n_checks;
} ReportInput;

/* NULL on out of memory. */
json_object *report_build(const ReportInput *in);

/* Each writes FILE atomically (a temporary file renamed over it). */
int report_write_json(const char *path, json_object *report);
int report_write_junit(const char *path, json_object *report);
int report_write_html(const char *path, json_object *report);

/* A device's JUnit verdict from its report entry: NULL when it passed, else
 * the failure message (the ESP-IDF reason first). */
const char *report_device_failure(json_object *device, char *buf, size_t size);
