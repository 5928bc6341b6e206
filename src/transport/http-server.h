/* SPDX-License-Identifier: MIT */
#pragma once

/* A small HTTP/1.1 server on sd-event: libmicrohttpd in its external epoll
 * mode (no thread of its own). MHD's epoll fd is one io source and its
 * timeout one time source, re-armed after every MHD_run(). Serves GET and
 * HEAD; the handler returns the body of a path or -ENOENT. */

#include <stddef.h>

#include <systemd/sd-event.h>

typedef struct HttpServer HttpServer;

/* Fills *body (malloc'ed, handed over) and *content_type for `path`;
 * returns 0, -ENOENT (404) or another negative errno (500). */
typedef int (*HttpServerHandler)(const char *path, char **body, size_t *len, const char **content_type,
                                 void *userdata);

/* `listen` is "ADDRESS:PORT" (config_parse_listen()); port 0 picks a free one. */
int http_server_new(sd_event *e, const char *address, unsigned port, HttpServerHandler handler, void *userdata,
                    HttpServer **ret);
HttpServer *http_server_free(HttpServer *s);
/* The port actually bound. */
unsigned http_server_port(const HttpServer *s);
