/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_MAIN

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "sim/control-client.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

#define INPUT_MAX (CONTROL_REQUEST_MAX + 1)     /* a request and its newline */
#define INPUT_FIRST 4096u

struct ControlClient {
        sd_event *event;                /* not owned */
        int fd;
        sd_event_source *io, *idle;
        ControlRequestHandler handler;
        ControlClientDone done;
        void *userdata;

        char *in;                       /* in_alloc + 1 bytes: room for a NUL after a last line */
        size_t in_off, in_len, in_alloc;
        char *out;
        size_t out_off, out_len, out_alloc;
        uint64_t active_usec;           /* CLOCK_MONOTONIC of the last byte in or out */
        bool eof;                       /* the peer sent all it will */
        bool closing;                   /* answer nothing more: flush, then close */
};

static size_t pending(const ControlClient *c) {
        return c->out_len - c->out_off;
}

static bool wants_input(const ControlClient *c) {
        return !c->eof && !c->closing && pending(c) < CONTROL_CLIENT_OUTPUT_HIGH && c->in_len < INPUT_MAX;
}

static void touch(ControlClient *c) {
        (void) sd_event_now(c->event, CLOCK_MONOTONIC, &c->active_usec);
}

static int out_append(ControlClient *c, const char *s, size_t n) {
        if (c->out_off > 0 && c->out_alloc - c->out_len < n) {
                memmove(c->out, c->out + c->out_off, pending(c));
                c->out_len -= c->out_off;
                c->out_off = 0;
        }
        if (c->out_alloc - c->out_len < n) {
                size_t want = MAX(c->out_alloc * 2, c->out_len + n);
                char *p = realloc(c->out, want);
                if (!p)
                        return -ENOMEM;
                c->out = p;
                c->out_alloc = want;
        }
        memcpy(c->out + c->out_len, s, n);
        c->out_len += n;
        return 0;
}

static int answer(ControlClient *c, json_object *a) {
        const char *s;
        size_t n;
        int r;

        if (!a)
                return -ENOMEM;
        s = json_object_to_json_string_length(a, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (!s)
                return -ENOMEM;
        r = out_append(c, s, n);
        if (r >= 0)
                r = out_append(c, "\n", 1);
        return r;
}

static int answer_request(ControlClient *c, char *line, size_t len) {
        _cleanup_(json_object_putp) json_object *a = NULL;

        /* "…\r\n" from a terminal tool (socat, nc -C) */
        if (len > 0 && line[len - 1] == '\r')
                line[--len] = 0;
        if (strspn(line, " \t") == len)
                return 0;       /* a blank line asks nothing */
        a = c->handler(c->userdata, line, len);
        return answer(c, a);
}

static int answer_too_long(ControlClient *c) {
        _cleanup_(json_object_putp) json_object *a = json_object_new_object();
        char msg[128];

        snprintf(msg, sizeof msg, "request longer than %u bytes (or without its newline)", CONTROL_REQUEST_MAX);
        if (!a || json_object_object_add(a, "error", json_object_new_string(msg)) < 0)
                return -ENOMEM;
        c->closing = true;
        c->in_off = c->in_len = 0;
        return answer(c, a);
}

/* Answers the complete requests in the input, in order, while the output
 * has room. */
static int process(ControlClient *c) {
        int r;

        while (!c->closing && pending(c) < CONTROL_CLIENT_OUTPUT_HIGH && c->in_off < c->in_len) {
                char *start = c->in + c->in_off;
                size_t avail = c->in_len - c->in_off;
                char *nl = memchr(start, '\n', avail);

                if (!nl) {
                        if (avail > CONTROL_REQUEST_MAX)
                                return answer_too_long(c);
                        if (!c->eof)
                                break;
                        /* the last request, ended by the end of input */
                        start[avail] = 0;
                        c->in_off = c->in_len;
                        r = answer_request(c, start, avail);
                        if (r < 0)
                                return r;
                        break;
                }
                size_t len = (size_t) (nl - start);
                if (len > CONTROL_REQUEST_MAX)
                        return answer_too_long(c);
                *nl = 0;
                c->in_off += len + 1;
                r = answer_request(c, start, len);
                if (r < 0)
                        return r;
        }
        if (c->in_off == c->in_len)
                c->in_off = c->in_len = 0;
        else if (c->in_off > 0 && c->in_len == c->in_alloc) {
                memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
                c->in_len -= c->in_off;
                c->in_off = 0;
        }
        return 0;
}

static int client_read(ControlClient *c) {
        int r;

        while (wants_input(c)) {
                if (c->in_len == c->in_alloc) {
                        size_t want = MIN(MAX(c->in_alloc * 2, (size_t) INPUT_FIRST), (size_t) INPUT_MAX);
                        char *p = realloc(c->in, want + 1);
                        if (!p)
                                return -ENOMEM;
                        c->in = p;
                        c->in_alloc = want;
                }
                ssize_t n = recv(c->fd, c->in + c->in_len, c->in_alloc - c->in_len, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                if (n == 0)
                        c->eof = true;
                else {
                        c->in_len += (size_t) n;
                        touch(c);
                }
                r = process(c);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int client_flush(ControlClient *c) {
        while (pending(c) > 0) {
                ssize_t n = send(c->fd, c->out + c->out_off, pending(c), MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                c->out_off += (size_t) n;
                touch(c);
        }
        c->out_off = c->out_len = 0;
        /* the whole fleet (a "devices" answer) may have passed through: give it back */
        if (c->out_alloc > CONTROL_CLIENT_OUTPUT_HIGH) {
                free(c->out);
                c->out = NULL;
                c->out_alloc = 0;
        }
        return 0;
}

/* Ends the connection: the owner frees c. */
static int client_end(ControlClient *c, int error) {
        if (error < 0)
                log_debug_errno(error, "Control client: connection ended: %m");
        if (c->done)
                c->done(c->userdata, c);
        else
                control_client_free(c);
        return 0;
}

/* After any event: answer what can be answered, write what can be written,
 * then wait for what is missing. */
static int client_update(ControlClient *c) {
        uint32_t events;
        int r;

        for (;;) {
                size_t before = c->in_len - c->in_off;
                r = process(c);
                if (r >= 0)
                        r = client_flush(c);
                if (r < 0)
                        return client_end(c, r);
                if (c->in_len - c->in_off == before || c->closing || pending(c) >= CONTROL_CLIENT_OUTPUT_HIGH)
                        break;
        }
        events = (wants_input(c) ? EPOLLIN : 0) | (pending(c) > 0 ? EPOLLOUT : 0);
        if (events == 0)
                /* nothing to wait for: end of input (or an error answered) and all written */
                return client_end(c, 0);
        r = sd_event_source_set_io_events(c->io, events);
        if (r < 0)
                return client_end(c, r);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlClient *c = userdata;
        int r = 0;

        if (revents & EPOLLOUT)
                r = client_flush(c);
        if (r >= 0 && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                if (wants_input(c))
                        r = client_read(c);
                else if (pending(c) == 0)
                        r = -ECONNRESET;        /* hung up, and nothing to read or write */
        }
        if (r < 0)
                return client_end(c, r);
        return client_update(c);
}

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlClient *c = userdata;

        if (usec < c->active_usec + CONTROL_CLIENT_IDLE_USEC) {
                (void) sd_event_source_set_time(s, c->active_usec + CONTROL_CLIENT_IDLE_USEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        }
        log_debug("Control client: nothing sent or read for %u s, dropping it", CONTROL_CLIENT_IDLE_USEC / 1000000);
        return client_end(c, 0);
}

int control_client_new(sd_event *event, int fd, ControlRequestHandler handler, ControlClientDone done,
                       void *userdata, ControlClient **ret) {
        ControlClient *c = calloc(1, sizeof *c);
        int r;

        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->event = event;
        c->fd = fd;
        c->handler = handler;
        c->done = done;
        c->userdata = userdata;
        touch(c);
        r = sd_event_add_io(event, &c->io, fd, EPOLLIN, on_io, c);
        if (r >= 0)
                r = sd_event_add_time(event, &c->idle, CLOCK_MONOTONIC, c->active_usec + CONTROL_CLIENT_IDLE_USEC,
                                      1000000, on_idle, c);
        if (r < 0) {
                control_client_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

ControlClient *control_client_free(ControlClient *c) {
        if (!c)
                return NULL;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->idle);
        if (c->fd >= 0)
                close(c->fd);
        free(c->in);
        free(c->out);
        free(c);
        return NULL;
}
