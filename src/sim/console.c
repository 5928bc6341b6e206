/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/macro.h"
#include "sim/console.h"

#define CONSOLE_LINE_MAX 8192

struct Console {
        sd_event_source *io;
        int pipe_r, pipe_w;
        char *status;                   /* what the status line shows, or NULL */
        bool drawn;                     /* the status line is on the screen */
        char buf[CONSOLE_LINE_MAX];     /* a worker line not complete yet */
        size_t len;
};

bool console_wanted(void) {
        if (getenv("JOURNAL_STREAM") || getenv("NOTIFY_SOCKET") || getenv("INVOCATION_ID"))
                return false;
        const char *term = getenv("TERM");
        return isatty(STDERR_FILENO) && term && !streq(term, "dumb");
}

static void status_clear(Console *c) {
        if (c->drawn)
                (void) fputs("\r\033[K", stderr);
        c->drawn = false;
}

static void status_draw(Console *c) {
        if (c->status && *c->status) {
                (void) fprintf(stderr, "\r\033[K%s", c->status);
                c->drawn = true;
        }
        (void) fflush(stderr);
}

static void log_hook(bool before, void *userdata) {
        Console *c = userdata;

        if (before)
                status_clear(c);
        else
                status_draw(c);
}

static void emit(Console *c, const char *line, size_t n) {
        status_clear(c);
        (void) fwrite(line, 1, n, stderr);
        (void) fputc('\n', stderr);
        status_draw(c);
}

static int on_pipe(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Console *c = userdata;

        for (;;) {
                ssize_t n = read(fd, c->buf + c->len, sizeof c->buf - c->len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                c->len += (size_t) n;
                char *start = c->buf, *nl;
                while ((nl = memchr(start, '\n', c->len - (size_t) (start - c->buf)))) {
                        emit(c, start, (size_t) (nl - start));
                        start = nl + 1;
                }
                c->len -= (size_t) (start - c->buf);
                memmove(c->buf, start, c->len);
                if (c->len == sizeof c->buf) { /* a line longer than the buffer: out it goes */
                        emit(c, c->buf, c->len);
                        c->len = 0;
                }
        }
        return 0;
}

int console_new(sd_event *e, Console **ret) {
        int p[2], r;
        Console *c;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        if (pipe2(p, O_CLOEXEC) < 0) {
                r = -errno;
                free(c);
                return r;
        }
        c->pipe_r = p[0];
        c->pipe_w = p[1];
        (void) fcntl(c->pipe_r, F_SETFL, O_NONBLOCK);
        r = sd_event_add_io(e, &c->io, c->pipe_r, EPOLLIN, on_pipe, c);
        if (r < 0) {
                console_free(c);
                return r;
        }
        log_set_stderr_hook(log_hook, c);
        *ret = c;
        return 0;
}

Console *console_free(Console *c) {
        if (!c)
                return NULL;
        log_set_stderr_hook(NULL, NULL);
        if (c->pipe_w >= 0)
                close(c->pipe_w);
        if (c->io)
                (void) on_pipe(c->io, c->pipe_r, EPOLLIN, c); /* what the workers said last */
        if (c->len > 0)
                emit(c, c->buf, c->len);
        status_clear(c);
        (void) fflush(stderr);
        sd_event_source_disable_unref(c->io);
        if (c->pipe_r >= 0)
                close(c->pipe_r);
        free(c->status);
        free(c);
        return NULL;
}

int console_worker_fd(Console *c) {
        return c->pipe_w;
}

void console_set_status(Console *c, const char *line) {
        free(c->status);
        c->status = line && *line ? strdup(line) : NULL;
        status_clear(c);
        status_draw(c);
}
