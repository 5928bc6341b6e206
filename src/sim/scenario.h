/* SPDX-License-Identifier: MIT */
#pragma once

/* A run's verdict (scenario.pass_if): thresholds checked against the
 * fleet's merged metrics at the end of the run, as pure arithmetic. The
 * daemon exits with SCENARIO_EXIT_FAILED when a check fails. */

#include <stddef.h>
#include <stdint.h>

#include "metrics/metrics.h"
#include "sim/config.h"
#include "sim/report.h"

#define SCENARIO_EXIT_FAILED 3
#define SCENARIO_CHECKS_MAX 8

/* Fills up to SCENARIO_CHECKS_MAX checks for the thresholds set in `c`
 * (a threshold of -1 is not checked) and returns how many; `totals` holds
 * every worker's metrics merged, `online` the devices online at the end. */
size_t scenario_evaluate(const DaemonConfig *c, const MetricsBlock *totals, uint64_t n_devices, uint64_t online,
                         ReportCheck *checks);
/* Whether every check passed (true for none). */
bool scenario_passed(const ReportCheck *checks, size_t n);
