/* SPDX-License-Identifier: MIT */
#pragma once

/* The daemon's terminal: a status line at the bottom of stderr (the ramp's
 * and OTA waves' progress), kept intact while log lines scroll above it.
 * The workers' stderr comes through one pipe into the supervisor's loop, so
 * their lines and the status line never mix. Only on a terminal, and never
 * under systemd (JOURNAL_STREAM, NOTIFY_SOCKET or INVOCATION_ID set). */

#include <stdbool.h>

#include <systemd/sd-event.h>

typedef struct Console Console;

/* Whether a status line would be shown here. */
bool console_wanted(void);

int console_new(sd_event *e, Console **ret);
Console *console_free(Console *c);

/* The write end of the pipe a worker's stderr goes to (the console keeps
 * it; dup2() it in the child). */
int console_worker_fd(Console *c);

/* Replaces the status line; NULL or "" clears it. */
void console_set_status(Console *c, const char *line);
