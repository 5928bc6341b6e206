/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_HTTP

#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "transport/http.h"
#include "transport/http-header.h"

#define HTTP_DEFAULT_BUFFER_SIZE (16u * 1024u)
#define HTTP_DEFAULT_CONNECT_TIMEOUT_MS 10000u
#define HTTP_MAX_REDIRECTS 10L

typedef enum HttpTransferState {
        HTTP_TRANSFER_QUEUED,      /* created inside a curl callback; added by the defer source */
        HTTP_TRANSFER_RUNNING,     /* in the multi handle */
        HTTP_TRANSFER_COMPLETING,  /* on_done is running */
        HTTP_TRANSFER_CANCELLED,   /* waiting for the defer source to remove and free it */
        _HTTP_TRANSFER_STATE_MAX,
        _HTTP_TRANSFER_STATE_INVALID = -EINVAL,
} HttpTransferState;

struct HttpTransfer {
        HttpClient *client;   /* not owned */
        HttpTransfer *next, *prev;
        CURL *easy;
        HttpTransferState state;
        bool in_multi;

        char *url;
        char *ca_file;
        uint64_t range_start;
        bool range_requested;

        HttpHeadersFunc on_headers;
        HttpDataFunc on_data;
        HttpDoneFunc on_done;
        void *userdata;

        bool headers_done;        /* final response headers seen and accepted */
        long header_status;       /* status of the response whose headers are being read */
        int64_t content_range_start, content_range_total;
        int error;                /* set when we aborted the transfer ourselves */
        HttpDoneInfo done_info;   /* filled just before on_done */
        char message[CURL_ERROR_SIZE + 128];
        char curl_error[CURL_ERROR_SIZE];
        uint64_t received;
};

/* One per socket curl watches; kept in curl's socket pointer. */
typedef struct HttpSocket {
        HttpClient *client;   /* not owned */
        struct HttpSocket *next, *prev;
        sd_event_source *source;
} HttpSocket;

struct HttpClient {
        sd_event *event;
        HttpSocket *sockets;
        CURLM *multi;
        sd_event_source *timer;
        sd_event_source *defer;   /* reaps cancelled transfers, adds queued ones */
        HttpTransfer *transfers;  /* every transfer, whatever its state */
        unsigned active;
        unsigned curl_depth;      /* > 0 while inside curl_multi_* (curl callbacks may run) */
};

static bool curl_initialized;

/* curl (built on OpenSSL) can leave entries on the thread's OpenSSL error
 * queue when a handshake fails or a connection in handshake is closed
 * ("shutdown while in init"). The worker's thread also runs libmosquitto,
 * whose net__read() calls SSL_get_error() without clearing the queue first:
 * a stale entry turns the next SSL_read()'s "want read" into SSL_ERROR_SSL,
 * and an unrelated device loses its broker session (found by the OTA fault
 * matrix: a TLS alert from an OTA server). So every return from curl leaves
 * the queue empty. */
static void curl_openssl_errors_clear(void) {
        ERR_clear_error();
}

static HttpTransfer *transfer_free(HttpTransfer *t) {
        if (!t)
                return NULL;
        if (t->easy) {
                if (t->in_multi)
                        curl_multi_remove_handle(t->client->multi, t->easy);
                curl_easy_cleanup(t->easy);
                curl_openssl_errors_clear();
        }
        if (t->client) {
                if (t->prev)
                        t->prev->next = t->next;
                else
                        t->client->transfers = t->next;
                if (t->next)
                        t->next->prev = t->prev;
                if (t->state == HTTP_TRANSFER_RUNNING || t->state == HTTP_TRANSFER_QUEUED)
                        t->client->active--;
        }
        free(t->url);
        free(t->ca_file);
        free(t);
        return NULL;
}

static void client_drain(HttpClient *c);

static int client_socket_action(HttpClient *c, curl_socket_t fd, int flags) {
        int running;
        CURLMcode mc;

        c->curl_depth++;
        mc = curl_multi_socket_action(c->multi, fd, flags, &running);
        c->curl_depth--;
        curl_openssl_errors_clear();
        if (mc != CURLM_OK)
                log_debug("curl_multi_socket_action: %s", curl_multi_strerror(mc));
        client_drain(c);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpClient *c = userdata;
        int flags = 0;

        if (revents & EPOLLIN)
                flags |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
        return client_socket_action(c, fd, flags);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        return client_socket_action(userdata, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: one io source per socket, kept in curl's socket
 * pointer (curl_multi_assign). */
static HttpSocket *http_socket_free(HttpSocket *hs) {
        if (!hs)
                return NULL;
        sd_event_source_disable_unref(hs->source);
        if (hs->prev)
                hs->prev->next = hs->next;
        else
                hs->client->sockets = hs->next;
        if (hs->next)
                hs->next->prev = hs->prev;
        free(hs);
        return NULL;
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        HttpClient *c = userp;
        HttpSocket *hs = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                http_socket_free(hs);
                curl_multi_assign(c->multi, fd, NULL);
                return 0;
        }

        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        if (hs) {
                r = sd_event_source_set_io_events(hs->source, events);
                if (r < 0)
                        log_debug_errno(r, "Failed to change io events on fd %d: %m", fd);
                return r < 0 ? -1 : 0;
        }

        hs = calloc(1, sizeof *hs);
        if (!hs)
                return -1;
        r = sd_event_add_io(c->event, &hs->source, fd, events, on_io, c);
        if (r < 0) {
                log_debug_errno(r, "Failed to watch fd %d: %m", fd);
                free(hs);
                return -1;
        }
        (void) sd_event_source_set_description(hs->source, "http-socket");
        hs->client = c;
        hs->next = c->sockets;
        if (c->sockets)
                c->sockets->prev = hs;
        c->sockets = hs;
        curl_multi_assign(c->multi, fd, hs);
        return 0;
}

/* CURLMOPT_TIMERFUNCTION: one time source; -1 disarms it, 0 means "as soon
 * as possible" (never call socket_action from here). */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        HttpClient *c = userp;
        int r;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;

        r = sd_event_source_set_time_relative(c->timer, (uint64_t) timeout_ms * 1000u);
        if (r < 0)
                return -1;
        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        return r < 0 ? -1 : 0;
}

static int map_curl_result(HttpTransfer *t, CURLcode cc) {
        curl_off_t appconnect = 0;

        switch ((int) cc) {  /* a foreign enum: default: is fine here */
        case CURLE_OK:
                return 0;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
                return -ESP_ERR_HTTP_INVALID_TRANSPORT;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_CRL_BADFILE:
                return -ESP_ERR_HTTP_CONNECT;
        case CURLE_TOO_MANY_REDIRECTS:
                return -ESP_ERR_HTTP_MAX_REDIRECT;
        case CURLE_RANGE_ERROR:
                return -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE;
        case CURLE_OPERATION_TIMEDOUT:
                if (t->headers_done)
                        return -ESP_ERR_HTTP_CONNECTION_CLOSED;
                /* the TLS handshake finished: the server never answered */
                (void) curl_easy_getinfo(t->easy, CURLINFO_APPCONNECT_TIME_T, &appconnect);
                return appconnect > 0 ? -ESP_ERR_HTTP_FETCH_HEADER : -ESP_ERR_HTTP_CONNECT;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_WEIRD_SERVER_REPLY:
                return t->headers_done ? -ESP_ERR_HTTP_CONNECTION_CLOSED : -ESP_ERR_HTTP_FETCH_HEADER;
        default:
                return -ESP_FAIL_CODE;
        }
}

/* The verdicts on the server's certificate: its chain, dates or name. A new
 * request meets the same certificate, unlike a refused or reset connection. */
static bool curl_result_is_peer_verification(CURLcode cc) {
        switch ((int) cc) {  /* a foreign enum: default: is fine here */
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
                return true;
        default:
                return false;
        }
}

static void transfer_complete(HttpTransfer *t, CURLcode cc) {
        HttpClient *c = t->client;
        curl_off_t retry_after = 0;
        long status = 0, redirects = 0;
        const char *where = NULL;
        int r;

        (void) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        (void) curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after);
        t->done_info = (HttpDoneInfo) {
                .status = status,
                .retry_after_s = retry_after > 0 ? (uint64_t) retry_after : 0,
                .peer_verify_failed = curl_result_is_peer_verification(cc),
        };
        curl_multi_remove_handle(c->multi, t->easy);
        curl_openssl_errors_clear();
        t->in_multi = false;

        if (t->error < 0)
                r = t->error;           /* message already set where we aborted */
        else if (cc == CURLE_UNSUPPORTED_PROTOCOL &&
                 curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_COUNT, &redirects) == CURLE_OK && redirects > 0 &&
                 curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &where) == CURLE_OK && where) {
                /* curl only says "Protocol "http" not supported": name the redirect */
                r = map_curl_result(t, cc);
                snprintf(t->message, sizeof t->message, "redirected (HTTP status %ld) to '%s': only https:// is allowed",
                         status, where);
        } else if (cc != CURLE_OK) {
                r = map_curl_result(t, cc);
                snprintf(t->message, sizeof t->message, "%s", t->curl_error[0] ? t->curl_error : curl_easy_strerror(cc));
        } else if (!t->headers_done && status >= 300) {
                r = -ESP_FAIL_CODE;
                snprintf(t->message, sizeof t->message, "HTTP status %ld", status);
        } else if (!t->headers_done) {
                r = -ESP_ERR_HTTP_FETCH_HEADER;
                snprintf(t->message, sizeof t->message, "no response headers (HTTP status %ld)", status);
        } else
                r = 0;

        t->state = HTTP_TRANSFER_COMPLETING;
        c->active--;
        if (t->on_done)
                t->on_done(t, r, r < 0 ? t->message : "", t->userdata);
        transfer_free(t);
}

static void client_drain(HttpClient *c) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(c->multi, &left))) {
                HttpTransfer *t = NULL;
                CURLcode cc;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                cc = msg->data.result;
                (void) curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
                if (!t)
                        continue;
                if (t->state == HTTP_TRANSFER_CANCELLED)
                        continue;   /* the defer source frees it */
                transfer_complete(t, cc);
        }
}

static int transfer_add(HttpTransfer *t) {
        HttpClient *c = t->client;
        CURLMcode mc;

        c->curl_depth++;
        mc = curl_multi_add_handle(c->multi, t->easy);
        c->curl_depth--;
        curl_openssl_errors_clear();
        if (mc != CURLM_OK)
                return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
        t->in_multi = true;
        t->state = HTTP_TRANSFER_RUNNING;
        return 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        HttpClient *c = userdata;
        HttpTransfer *t, *next;

        for (t = c->transfers; t; t = next) {
                next = t->next;
                if (t->state == HTTP_TRANSFER_CANCELLED)
                        transfer_free(t);
        }
        for (t = c->transfers; t; t = next) {
                int r;

                next = t->next;
                if (t->state != HTTP_TRANSFER_QUEUED)
                        continue;
                r = transfer_add(t);
                if (r < 0) {
                        t->state = HTTP_TRANSFER_COMPLETING;
                        c->active--;
                        snprintf(t->message, sizeof t->message, "cannot start transfer: %s", esp_err_to_name(r));
                        if (t->on_done)
                                t->on_done(t, r, t->message, t->userdata);
                        transfer_free(t);
                }
        }
        return 0;
}

static void client_schedule_defer(HttpClient *c) {
        (void) sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
}

static int transfer_abort(HttpTransfer *t, int error, const char *fmt, ...) _printf_(3, 4);
static int transfer_abort(HttpTransfer *t, int error, const char *fmt, ...) {
        va_list ap;

        t->error = error;
        va_start(ap, fmt);
        vsnprintf(t->message, sizeof t->message, fmt, ap);
        va_end(ap);
        return error;
}

/* Decides, once the final response's headers are in, whether the body is
 * what was asked for. Returns false (and sets t->error) to abort. */
static bool transfer_accept_headers(HttpTransfer *t) {
        HttpResponseInfo info = {
                .status = t->header_status,
                .content_length = -1,
                .range_start = t->content_range_start,
                .total_length = t->content_range_total,
        };
        curl_off_t cl = -1;
        long s = t->header_status;
        int r;

        if (s == 304) {
                transfer_abort(t, -ESP_ERR_HTTP_NOT_MODIFIED, "HTTP status 304 (not modified)");
                return false;
        }
        if (s == 416) {
                transfer_abort(t, -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE, "HTTP status 416 (range not satisfiable)");
                return false;
        }
        if (s < 200 || s >= 300) {
                transfer_abort(t, -ESP_FAIL_CODE, "HTTP status %ld", s);
                return false;
        }
        if (t->range_requested && (s != 206 || t->content_range_start != (int64_t) t->range_start)) {
                transfer_abort(t, -ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE,
                               "asked for bytes %" PRIu64 "-, server answered HTTP status %ld%s",
                               t->range_start, s, s == 206 ? " with another range" : " (no partial content)");
                return false;
        }

        (void) curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        info.content_length = cl;
        if (info.total_length < 0 && s == 200)
                info.total_length = cl;

        t->headers_done = true;
        if (t->on_headers) {
                r = t->on_headers(t, &info, t->userdata);
                if (r < 0) {
                        transfer_abort(t, r, "aborted by the receiver after the headers: %s", esp_err_to_name(r));
                        return false;
                }
        }
        return true;
}

static size_t curl_header_cb(char *buffer, size_t size, size_t nitems, void *userdata) {
        HttpTransfer *t = userdata;
        size_t n = size * nitems;

        if (t->state == HTTP_TRANSFER_CANCELLED)
                return 0;
        if (t->headers_done)
                return n;   /* trailers */

        switch (http_header_line_kind(buffer, n)) {
        case HTTP_HEADER_STATUS:
                /* a new response starts (after a 1xx or a redirect) */
                t->header_status = 0;
                t->content_range_start = -1;
                t->content_range_total = -1;
                (void) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->header_status);
                return n;
        case HTTP_HEADER_CONTENT_RANGE: {
                int64_t a, b, total;

                if (http_content_range_parse(buffer + HTTP_CONTENT_RANGE_NAME_LEN, n - HTTP_CONTENT_RANGE_NAME_LEN,
                                             &a, &b, &total) == 0) {
                        t->content_range_start = a;
                        t->content_range_total = total;
                }
                return n;
        }
        case HTTP_HEADER_END: {
                long s = 0;

                (void) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &s);
                t->header_status = s;
                if (s >= 100 && s < 200)
                        return n;
                if (s >= 300 && s < 400 && s != 304)
                        return n;   /* curl follows it; without a Location it completes unaccepted */
                if (!transfer_accept_headers(t))
                        return 0;   /* CURLE_WRITE_ERROR; t->error holds the real result */
                if (t->state == HTTP_TRANSFER_CANCELLED)
                        return 0;   /* cancelled from inside on_headers */
                return n;
        }
        case HTTP_HEADER_OTHER:
        case _HTTP_HEADER_LINE_MAX:
        case _HTTP_HEADER_LINE_INVALID:
                return n;
        }
        return n;
}

static size_t curl_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        HttpTransfer *t = userdata;
        size_t n = size * nmemb;
        int r;

        if (t->state == HTTP_TRANSFER_CANCELLED)
                return CURL_WRITEFUNC_ERROR;
        if (!t->headers_done)
                return n;   /* body of a redirect or an error page */
        if (t->on_data) {
                r = t->on_data(t, ptr, n, t->userdata);
                if (t->state == HTTP_TRANSFER_CANCELLED)
                        return CURL_WRITEFUNC_ERROR;
                if (r < 0) {
                        transfer_abort(t, r, "aborted by the receiver after %" PRIu64 " bytes: %s",
                                       t->received, esp_err_to_name(r));
                        return CURL_WRITEFUNC_ERROR;
                }
        }
        t->received += n;
        return n;
}

static int transfer_setup(HttpTransfer *t, const HttpRequest *req) {
        uint32_t connect_ms = req->connect_timeout_ms ?: HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
        uint32_t bufsize = req->buffer_size ?: HTTP_DEFAULT_BUFFER_SIZE;
        const char *protocols = req->allow_plain_http ? "https,http" : "https";
        char range[32];
        CURL *e = t->easy;

#define SET(opt, val) do { if (curl_easy_setopt(e, opt, val) != CURLE_OK) return -EINVAL; } while (0)
        SET(CURLOPT_URL, t->url);
        SET(CURLOPT_PRIVATE, t);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_PROTOCOLS_STR, protocols);
        SET(CURLOPT_REDIR_PROTOCOLS_STR, protocols);
        SET(CURLOPT_FOLLOWLOCATION, 1L);
        SET(CURLOPT_MAXREDIRS, HTTP_MAX_REDIRECTS);
        SET(CURLOPT_SSL_VERIFYPEER, 1L);
        SET(CURLOPT_SSL_VERIFYHOST, 2L);
        if (t->ca_file)
                SET(CURLOPT_CAINFO, t->ca_file);
        SET(CURLOPT_ERRORBUFFER, t->curl_error);
        SET(CURLOPT_CONNECTTIMEOUT_MS, (long) connect_ms);
        if (req->timeout_ms > 0)
                SET(CURLOPT_TIMEOUT_MS, (long) req->timeout_ms);
        if (req->low_speed_limit > 0 && req->low_speed_time_s > 0) {
                SET(CURLOPT_LOW_SPEED_LIMIT, (long) req->low_speed_limit);
                SET(CURLOPT_LOW_SPEED_TIME, (long) req->low_speed_time_s);
        }
        SET(CURLOPT_BUFFERSIZE, (long) MAX(bufsize, (uint32_t) 1024));
        SET(CURLOPT_HEADERFUNCTION, curl_header_cb);
        SET(CURLOPT_HEADERDATA, t);
        SET(CURLOPT_WRITEFUNCTION, curl_write_cb);
        SET(CURLOPT_WRITEDATA, t);
        SET(CURLOPT_USERAGENT, "ESP32 HTTP Client/1.0");
        if (t->range_requested) {
                snprintf(range, sizeof range, "%" PRIu64 "-", t->range_start);
                SET(CURLOPT_RANGE, range);
        }
#undef SET
        return 0;
}

int http_transfer_start(HttpClient *c, const HttpRequest *req, HttpTransfer **ret) {
        HttpTransfer *t;
        int r;

        if (!c || !req || !req->url)
                return -EINVAL;

        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        t->content_range_start = -1;
        t->content_range_total = -1;
        t->url = strdup(req->url);
        t->ca_file = req->ca_file ? strdup(req->ca_file) : NULL;
        t->easy = curl_easy_init();
        if (!t->url || (req->ca_file && !t->ca_file) || !t->easy) {
                transfer_free(t);
                return -ENOMEM;
        }
        t->range_start = req->range_start;
        t->range_requested = req->range_start > 0;
        t->on_headers = req->on_headers;
        t->on_data = req->on_data;
        t->on_done = req->on_done;
        t->userdata = req->userdata;

        r = transfer_setup(t, req);
        if (r < 0) {
                transfer_free(t);
                return r;
        }

        /* link in */
        t->client = c;
        t->next = c->transfers;
        if (c->transfers)
                c->transfers->prev = t;
        c->transfers = t;
        c->active++;
        t->state = HTTP_TRANSFER_QUEUED;

        if (c->curl_depth > 0)
                /* curl forbids curl_multi_add_handle from inside its callbacks */
                client_schedule_defer(c);
        else {
                r = transfer_add(t);
                if (r < 0) {
                        transfer_free(t);
                        return r;
                }
        }

        if (ret)
                *ret = t;
        return 0;
}

HttpTransfer *http_transfer_cancel(HttpTransfer *t) {
        if (!t)
                return NULL;
        switch (t->state) {
        case HTTP_TRANSFER_COMPLETING:
        case HTTP_TRANSFER_CANCELLED:
                return NULL;
        case HTTP_TRANSFER_QUEUED:
        case HTTP_TRANSFER_RUNNING:
                t->client->active--;
                t->state = HTTP_TRANSFER_CANCELLED;
                t->on_headers = NULL;
                t->on_data = NULL;
                t->on_done = NULL;
                if (t->client->curl_depth == 0)
                        transfer_free(t);
                else
                        /* inside a curl callback: curl_multi_remove_handle is not allowed here */
                        client_schedule_defer(t->client);
                return NULL;
        case _HTTP_TRANSFER_STATE_MAX:
        case _HTTP_TRANSFER_STATE_INVALID:
                break;
        }
        return NULL;
}

uint64_t http_transfer_received(const HttpTransfer *t) {
        return t ? t->received : 0;
}

const HttpDoneInfo *http_transfer_done_info(const HttpTransfer *t) {
        return t && t->state == HTTP_TRANSFER_COMPLETING ? &t->done_info : NULL;
}

int http_client_new(sd_event *event, HttpClient **ret) {
        HttpClient *c;
        int r;

        if (!event || !ret)
                return -EINVAL;

        if (!curl_initialized) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                curl_initialized = true;
        }

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(event);

        c->multi = curl_multi_init();
        if (!c->multi) {
                http_client_free(c);
                return -ENOMEM;
        }
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);

        /* 1 ms accuracy: curl's timers pace connects and retries */
        r = sd_event_add_time_relative(event, &c->timer, CLOCK_MONOTONIC, 0, 1000, on_timer, c);
        if (r < 0) {
                http_client_free(c);
                return r;
        }
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->timer, "http-timer");

        r = sd_event_add_defer(event, &c->defer, on_defer, c);
        if (r < 0) {
                http_client_free(c);
                return r;
        }
        (void) sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->defer, "http-reap");

        *ret = c;
        return 0;
}

HttpClient *http_client_free(HttpClient *c) {
        if (!c)
                return NULL;
        while (c->transfers)
                transfer_free(c->transfers);
        if (c->multi)
                curl_multi_cleanup(c->multi);
        curl_openssl_errors_clear();
        /* whatever curl did not report as removed */
        while (c->sockets)
                http_socket_free(c->sockets);
        sd_event_source_disable_unref(c->timer);
        sd_event_source_disable_unref(c->defer);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

int http_client_set_max_connections(HttpClient *c, unsigned n) {
        if (!c)
                return -EINVAL;
        if (curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) n) != CURLM_OK)
                return -EINVAL;
        return 0;
}

unsigned http_client_active(const HttpClient *c) {
        return c ? c->active : 0;
}
