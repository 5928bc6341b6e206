/* SPDX-License-Identifier: MIT */
#pragma once

/* A small HTTPS client on sd-event, built on libcurl's multi-socket
 * interface (esp-formats.md Appendix C; curl's docs/examples/ephiperfifo.c):
 * one io source per socket, one time source for curl's timer, and
 * curl_multi_info_read drained after every curl_multi_socket_action. No
 * threads, no blocking calls.
 *
 * One HttpClient per process (or per worker): it owns the multi handle, so
 * all transfers share the connection cache and curl's CA cache. Any number of
 * transfers run concurrently. Results are mapped once, here, to ESP-IDF
 * esp_http_client names (esp-formats.md §8):
 *
 *   0                                   2xx (206 when a Range was asked for)
 *   -ESP_ERR_HTTP_CONNECT               DNS, TCP, TLS handshake, certificate or
 *                                       hostname verification (told apart by
 *                                       http_transfer_done_info), connect timeout
 *   -ESP_ERR_HTTP_FETCH_HEADER          connected, but no (complete) response header
 *   -ESP_ERR_HTTP_CONNECTION_CLOSED     body cut short, or stalled below the low-speed limit
 *   -ESP_ERR_HTTP_NOT_MODIFIED          304
 *   -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE 416, or a Range request answered without 206
 *   -ESP_ERR_HTTP_MAX_REDIRECT          too many redirects
 *   -ESP_ERR_HTTP_INVALID_TRANSPORT     not an https:// URL (or redirect), malformed URL
 *   -ESP_FAIL_CODE                      any other 3xx/4xx/5xx status, other errors
 *   -ENOMEM                             out of memory
 *   any value < 0 returned by a data/headers callback (the transfer is aborted
 *   and that value is reported as its result)
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

typedef struct HttpClient HttpClient;
typedef struct HttpTransfer HttpTransfer;

/* Creates the client on `event` (a reference is taken). */
int http_client_new(sd_event *event, HttpClient **ret);
/* Cancels every transfer (no completion callbacks) and frees the client.
 * Accepts NULL, returns NULL. Must not be called from inside an HttpTransfer
 * callback. */
HttpClient *http_client_free(HttpClient *c);

/* Caps the total number of connections (0 = unlimited, the default); extra
 * transfers wait in curl's queue. */
int http_client_set_max_connections(HttpClient *c, unsigned n);
/* Transfers currently running (started and not yet completed or cancelled). */
unsigned http_client_active(const HttpClient *c);

typedef struct HttpResponseInfo {
        long status;               /* final HTTP status (after redirects) */
        int64_t content_length;    /* Content-Length of this response, -1 when unknown */
        int64_t range_start;       /* from Content-Range "bytes a-b/total": a, or -1 */
        int64_t total_length;      /* from Content-Range: total, else content_length when status is 200, or -1 */
} HttpResponseInfo;

/* Called once, when the final response's headers are complete and the status
 * is acceptable (2xx, and 206 if a Range was requested). Return < 0 to abort
 * the transfer with that result. */
typedef int (*HttpHeadersFunc)(HttpTransfer *t, const HttpResponseInfo *info, void *userdata);
/* Called for each chunk of the body (at most the request's buffer_size
 * bytes). Return < 0 to abort the transfer with that result. */
typedef int (*HttpDataFunc)(HttpTransfer *t, const void *data, size_t size, void *userdata);
/* Called exactly once unless the transfer was cancelled: `result` as in the
 * table above, `message` a human-readable reason (never NULL; "" on success).
 * The transfer is freed when this returns. */
typedef void (*HttpDoneFunc)(HttpTransfer *t, int result, const char *message, void *userdata);

typedef struct HttpRequest {
        const char *url;              /* https://… (copied) */
        const char *ca_file;          /* PEM CA bundle that verifies the server (copied); NULL = system store */
        uint64_t range_start;         /* > 0: send "Range: bytes=<range_start>-" and require 206 */
        bool allow_plain_http;        /* tests only: also accept http:// */
        uint32_t connect_timeout_ms;  /* 0 = 10 s */
        uint32_t timeout_ms;          /* whole transfer, 0 = none */
        uint32_t low_speed_limit;     /* bytes/s; abort when below it for low_speed_time_s (0 = off) */
        uint32_t low_speed_time_s;
        uint32_t buffer_size;         /* receive buffer, bounds memory per transfer; 0 = 16 KiB */
        HttpHeadersFunc on_headers;   /* optional */
        HttpDataFunc on_data;         /* optional (body discarded when NULL) */
        HttpDoneFunc on_done;         /* optional */
        void *userdata;
} HttpRequest;

/* Starts GET `req->url`. The transfer belongs to the client; `ret` (optional)
 * is a borrowed handle valid until on_done returns or until
 * http_transfer_cancel(). Safe to call from inside any callback. */
int http_transfer_start(HttpClient *c, const HttpRequest *req, HttpTransfer **ret);

/* Stops a transfer without calling its on_done. Safe from inside any of its
 * own callbacks (or another transfer's); a no-op on a transfer whose on_done
 * is running. Accepts NULL, always returns NULL. */
HttpTransfer *http_transfer_cancel(HttpTransfer *t);

/* Body bytes handed to on_data so far. */
uint64_t http_transfer_received(const HttpTransfer *t);

/* What a finished transfer saw beyond its result, for a caller that decides
 * whether to try again (esp-formats.md §8 leaves retries to the application). */
typedef struct HttpDoneInfo {
        long status;                 /* status of the last response (a redirect's too), 0 if none came */
        uint64_t retry_after_s;      /* its Retry-After (seconds, or an HTTP-date from now), 0 if none */
        bool peer_verify_failed;     /* the server's certificate chain, validity or host name was refused */
} HttpDoneInfo;

/* Valid inside on_done only (NULL elsewhere). */
const HttpDoneInfo *http_transfer_done_info(const HttpTransfer *t);
