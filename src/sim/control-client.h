/* SPDX-License-Identifier: MIT */
#pragma once

/* One connection to the control socket (control.h): newline-terminated
 * JSON requests in, one JSON line out per request, on the supervisor's
 * loop and never blocking it.
 *
 * Requests are answered in order. Answers wait in a per-client output
 * buffer written on EPOLLOUT; while more than CONTROL_CLIENT_OUTPUT_HIGH bytes
 * wait, the client's next requests wait too (a client that does not read
 * cannot make the daemon buffer without end). A request longer than
 * CONTROL_REQUEST_MAX bytes is answered with an error and the connection
 * closed; a client with no traffic for CONTROL_CLIENT_IDLE_USEC is dropped.
 * A last request without its newline is answered at end of input. */

#include <json-c/json.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#define CONTROL_REQUEST_MAX (64u * 1024u)
#define CONTROL_CLIENT_OUTPUT_HIGH (1024u * 1024u)
#define CONTROL_CLIENT_IDLE_USEC (30u * 1000000u)

typedef struct ControlClient ControlClient;

/* Answers one request: `line` is NUL-terminated, `len` bytes without the
 * newline (it may hold NUL bytes of its own). Returns a new reference, NULL
 * when out of memory (the connection is then closed). */
typedef json_object *(*ControlRequestHandler)(void *userdata, const char *line, size_t len);
/* The connection is over (end of input answered, an error, idle): the owner
 * frees `c` here, with control_client_free(). */
typedef void (*ControlClientDone)(void *userdata, ControlClient *c);

/* Takes `fd` (a connected, non-blocking stream socket) in every case. */
int control_client_new(sd_event *event, int fd, ControlRequestHandler handler, ControlClientDone done,
                       void *userdata, ControlClient **ret);
ControlClient *control_client_free(ControlClient *c);
