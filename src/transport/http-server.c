/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_HTTP

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "transport/http-server.h"

struct HttpServer {
        sd_event *event;
        struct MHD_Daemon *mhd;
        sd_event_source *io, *timer;
        HttpServerHandler handler;
        void *userdata;
        unsigned port;
};

static void server_arm(HttpServer *s);

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        HttpServer *s = userdata;

        (void) MHD_run(s->mhd);
        server_arm(s);
        return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        HttpServer *s = userdata;

        (void) MHD_run(s->mhd);
        server_arm(s);
        return 0;
}

/* MHD's next timeout (idle connections, pending work) as our timer. */
static void server_arm(HttpServer *s) {
        MHD_UNSIGNED_LONG_LONG ms = 0;

        if (MHD_get_timeout(s->mhd, &ms) != MHD_YES) {
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time_relative(s->timer, (uint64_t) ms * 1000);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static enum MHD_Result queue_text(struct MHD_Connection *c, unsigned status, const char *text) {
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *) text, MHD_RESPMEM_PERSISTENT);
        enum MHD_Result k;

        if (!r)
                return MHD_NO;
        (void) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
        k = MHD_queue_response(c, status, r);
        MHD_destroy_response(r);
        return k;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        HttpServer *s = cls;
        const char *type = "text/plain; charset=utf-8";
        char *body = NULL;
        size_t len = 0;
        int r;

        if (!streq(method, MHD_HTTP_METHOD_GET) && !streq(method, MHD_HTTP_METHOD_HEAD))
                return queue_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        if (*upload_data_size > 0) {
                *upload_data_size = 0; /* a GET with a body: ignored */
                return MHD_YES;
        }
        r = s->handler(url, &body, &len, &type, s->userdata);
        if (r == -ENOENT)
                return queue_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
        if (r < 0) {
                log_warning_errno(r, "HTTP %s: %m", url);
                return queue_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
        }
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return MHD_NO;
        }
        (void) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        enum MHD_Result k = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return k;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        char buf[512];

        (void) vsnprintf(buf, sizeof buf, fmt, ap);
        buf[strcspn(buf, "\n")] = 0;
        log_debug("libmicrohttpd: %s", buf);
}

int http_server_new(sd_event *e, const char *address, unsigned port, HttpServerHandler handler, void *userdata,
                    HttpServer **ret) {
        struct sockaddr_storage ss = {};
        socklen_t sl;
        HttpServer *s;
        unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
        int r;

        if (port > 65535)
                return -EINVAL;
        if (inet_pton(AF_INET, address, &((struct sockaddr_in *) &ss)->sin_addr) == 1) {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                a->sin_family = AF_INET;
                a->sin_port = htons((uint16_t) port);
                sl = sizeof *a;
        } else if (inet_pton(AF_INET6, address, &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons((uint16_t) port);
                sl = sizeof *a;
                flags |= MHD_USE_IPv6;
        } else
                return -EINVAL;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->handler = handler;
        s->userdata = userdata;
        errno = 0;
        s->mhd = MHD_start_daemon(flags, (uint16_t) port, NULL, NULL, on_request, s,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned) 64,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 15,
                                  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                                  MHD_OPTION_END);
        if (!s->mhd) {
                r = errno > 0 ? -errno : -EADDRINUSE;
                goto fail;
        }
        const union MHD_DaemonInfo *fdi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        const union MHD_DaemonInfo *pi = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
        if (!fdi) {
                r = -EOPNOTSUPP;
                goto fail;
        }
        s->port = pi ? pi->port : port;
        (void) sl;
        r = sd_event_add_io(e, &s->io, fdi->epoll_fd, EPOLLIN, on_io, s);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &s->timer, CLOCK_MONOTONIC, 1000000, 1000, on_timer, s);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(s->io, "http-server");
        server_arm(s);
        *ret = s;
        return 0;
fail:
        http_server_free(s);
        return r;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->timer);
        if (s->mhd)
                MHD_stop_daemon(s->mhd);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

unsigned http_server_port(const HttpServer *s) {
        return s->port;
}
