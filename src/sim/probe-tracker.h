/* SPDX-License-Identifier: MIT */
#pragma once

/* The probe's bookkeeping, as pure state (probe.h drives it): which
 * command each device has not answered yet. A command to one device
 * (/esp/<id>/…) is answered by that device's next log line; a broadcast
 * (/esp/update/…, /esp/restart) by the next log line of every device. The
 * latency runs from when the probe saw the command go by (the broker
 * forwards it to the probe and to the devices alike) to when it saw the
 * line, so both ends are timed by one clock. A newer command replaces an
 * unanswered one. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ProbeTracker ProbeTracker;

int probe_tracker_new(ProbeTracker **ret);
ProbeTracker *probe_tracker_free(ProbeTracker *t);

/* A command seen at `now` (µs): for `id`, or for every device when id is NULL. */
int probe_tracker_command(ProbeTracker *t, const char *id, uint64_t now);
/* A log line from `id` at `now`: the latency of the command it answers (µs),
 * or -1 when nothing was pending for it. */
int64_t probe_tracker_log_line(ProbeTracker *t, const char *id, uint64_t now);
size_t probe_tracker_n_devices(const ProbeTracker *t);

/* The device id in `topic` for a template with one "%s" ("/esp/%s/log"):
 * false when the topic does not fit it. */
bool probe_topic_id(const char *tmpl, const char *topic, char *id, size_t size);
/* Whether `topic` is a secure_esp command, and for whom: *ret_id is set to
 * "" for a broadcast (/esp/update/…, /esp/restart). */
bool probe_command_topic(const char *topic, char *id, size_t size);
