/* SPDX-License-Identifier: MIT */
#pragma once

/* The daemon's own probe subscriber (probe.enabled): one MQTT client in the
 * supervisor, with an operator's certificate (probe.cert, probe.key), that
 * watches the fleet from the broker's side and times
 *   - commands: from a command seen on /esp/… to the device's next log line
 *     (probe-tracker.h), into METRIC_COMMAND;
 *   - telemetry: from when a reading was due (its "due" field, CLOCK_REALTIME
 *     µs) to its arrival at the probe, into METRIC_TELEMETRY.
 * It lives on the supervisor's loop, reconnects on its own, and never holds
 * up the fleet: a probe that cannot connect only logs. */

#include <systemd/sd-event.h>

#include "metrics/metrics.h"
#include "sim/config.h"

typedef struct Probe Probe;

/* `block` (borrowed) receives the probe's histograms and counters. */
int probe_new(sd_event *e, const DaemonConfig *c, MetricsBlock *block, Probe **ret, char *err, size_t errlen);
Probe *probe_free(Probe *p);
