/* SPDX-License-Identifier: MIT */
/* espfleet status | top | command: clients of a running espfleetd's control
 * socket (sim/control.h has the protocol). Unlike the daemon, these may
 * block: one connection, one request, one answer line. */
#include <getopt.h>
#include <json-c/json.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>

#include "basic/errmsg.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "cli/cli.h"
#include "sim/config.h"
#include "sim/control.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

#define ANSWER_MAX (512u * 1024u * 1024u)      /* "devices" of a large fleet */
#define IO_TIMEOUT_S 30
#define TOP_SLOWEST_MAX 10
#define JSON_FLAGS (JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)

static void cli_error(const char *fmt, ...) _printf_(1, 2);
static void cli_error(const char *fmt, ...) {
        va_list ap;

        fputs("espfleet: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* ---- talking to the daemon ---------------------------------------------- */

/* The socket: --socket, else control.socket of -c CONFIG, else the default. */
static int socket_path(const char *arg, const char *config, char **ret) {
        DaemonConfig c;
        char err[1024] = "";
        int r;

        if (arg) {
                *ret = strdup(arg);
                return *ret ? 0 : -ENOMEM;
        }
        if (!config)
                return control_socket_default_path(ret);
        r = daemon_config_init(&c);
        if (r >= 0)
                r = daemon_config_load(&c, config, err, sizeof err);
        if (r < 0) {
                cli_error("cannot read %s: %s", config, r == -EINVAL ? err : strerror(-r));
                daemon_config_done(&c);
                return r;
        }
        if (c.control_socket && *c.control_socket) {
                *ret = strdup(c.control_socket);
                r = *ret ? 0 : -ENOMEM;
        } else
                r = control_socket_default_path(ret);
        daemon_config_done(&c);
        return r;
}

static int daemon_connect(const char *path, char *err, size_t errlen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
        _cleanup_close_ int fd = -EBADF;

        if (strlen(path) >= sizeof sa.sun_path)
                return errf(err, errlen, -ENAMETOOLONG, "cannot reach espfleetd at %s: the path is longer than %zu bytes",
                            path, sizeof sa.sun_path - 1);
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (const struct sockaddr *) &sa, sizeof sa) < 0) {
                int r = -errno;
                return errf(err, errlen, r,
                            "cannot reach espfleetd at %s: %s (is espfleetd running? use --socket or -c CONFIG)",
                            path, strerror(-r));
        }
        /* a wedged daemon must not hang the terminal */
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        return TAKE_FD(fd);
}

static int send_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* Reads one answer line. */
static int read_line(int fd, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, alloc = 0;

        for (;;) {
                if (alloc - len < 65536) {
                        if (alloc >= ANSWER_MAX)
                                return -EMSGSIZE;
                        size_t want = MAX(alloc * 2, (size_t) 65536 * 2);
                        char *p = realloc(buf, want + 1);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        alloc = want;
                }
                ssize_t n = recv(fd, buf + len, alloc - len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? -ETIMEDOUT : -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                char *nl = memchr(buf + len, '\n', (size_t) n);
                len += (size_t) n;
                if (nl) {
                        *nl = 0;
                        *ret_len = (size_t) (nl - buf);
                        *ret = TAKE_PTR(buf);
                        return 0;
                }
        }
}

/* Sends `req`, returns the answer. An {"error":…} answer gives -EREMOTEIO
 * and its text in `err`, as every other failure does. */
static int daemon_call(const char *path, json_object *req, json_object **ret, char *err, size_t errlen) {
        _cleanup_close_ int fd = daemon_connect(path, err, errlen);
        _cleanup_free_ char *line = NULL;
        const char *s;
        json_object *answer, *error;
        size_t n;
        int r;

        if (fd < 0)
                return fd;
        s = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (!s)
                return errf(err, errlen, -ENOMEM, "out of memory");
        r = send_all(fd, s, n);
        if (r >= 0)
                r = send_all(fd, "\n", 1);
        if (r < 0)
                return errf(err, errlen, r, "cannot send a request to espfleetd at %s: %s", path, strerror(-r));
        r = read_line(fd, &line, &n);
        if (r == -ECONNRESET)
                return errf(err, errlen, r, "espfleetd at %s closed the connection without answering", path);
        if (r == -ETIMEDOUT)
                return errf(err, errlen, r, "espfleetd at %s did not answer within %d s", path, IO_TIMEOUT_S);
        if (r < 0)
                return errf(err, errlen, r, "cannot read the answer of espfleetd at %s: %s", path, strerror(-r));
        answer = json_tokener_parse(line);
        if (!answer || !json_object_is_type(answer, json_type_object)) {
                json_object_put(answer);
                return errf(err, errlen, -EBADMSG, "espfleetd at %s answered something that is not a JSON object",
                            path);
        }
        if (json_object_object_get_ex(answer, "error", &error)) {
                r = errf(err, errlen, -EREMOTEIO, "%s", json_object_get_string(error));
                json_object_put(answer);
                return r;
        }
        *ret = answer;
        return 0;
}

static json_object *request_new(const char *method) {
        json_object *o = json_object_new_object();

        if (o && json_object_object_add(o, "method", json_object_new_string(method)) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* ---- reading answers ---------------------------------------------------- */

static json_object *jget(json_object *o, const char *key) {
        json_object *v = NULL;

        return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *jstr(json_object *o, const char *key) {
        json_object *v = jget(o, key);

        return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static size_t jlen(json_object *a) {
        return json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

static int64_t jint(json_object *o, const char *key) {
        return json_object_get_int64(jget(o, key));
}

/* NAN when absent or null. */
static double jnum(json_object *o, const char *key) {
        json_object *v = jget(o, key);

        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
                return NAN;
        return json_object_get_double(v);
}

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* "2025-03-01T12:00:00.123Z" (metrics-json.h) -> seconds since the epoch. */
static double parse_time(const char *s) {
        struct tm tm = {};
        unsigned ms = 0;
        int n = 0;

        if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3uZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                         &tm.tm_min, &tm.tm_sec, &ms, &n) != 7 || s[n] != 0)
                return NAN;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        return (double) timegm(&tm) + ms / 1000.0;
}

/* "0.053 s", "12.4 s", "3m 07s", "2h 05m", "4d 03h"; "-" for none. */
static const char *format_duration(double s, char *buf, size_t size) {
        if (isnan(s) || s < 0)
                snprintf(buf, size, "-");
        else if (s < 10)
                snprintf(buf, size, "%.3f s", s);
        else if (s < 60)
                snprintf(buf, size, "%.1f s", s);
        else if (s < 3600)
                snprintf(buf, size, "%um %02us", (unsigned) s / 60, (unsigned) s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%uh %02um", (unsigned) s / 3600, (unsigned) s % 3600 / 60);
        else
                snprintf(buf, size, "%ud %02uh", (unsigned) (s / 86400), (unsigned) fmod(s, 86400) / 3600);
        return buf;
}

/* How long ago an ISO time was: "12.4 s", "-" for none. */
static const char *format_age(const char *iso, char *buf, size_t size) {
        double t = parse_time(iso);

        return format_duration(isnan(t) ? NAN : MAX(now_s() - t, 0.0), buf, size);
}

static const char *or_dash(const char *s) {
        return s && *s ? s : "-";
}

/* ---- status ------------------------------------------------------------- */

/* " a 1, b 2" of {"a":1,"b":2}, leaving out zeros; " none" for nothing. */
static void print_counts(FILE *f, json_object *counts) {
        bool any = false;

        if (json_object_is_type(counts, json_type_object)) {
                json_object_object_foreach(counts, key, val) {
                        if (json_object_get_int64(val) == 0)
                                continue;
                        fprintf(f, "%s %s %" PRId64, any ? "," : "", key, json_object_get_int64(val));
                        any = true;
                }
        }
        fprintf(f, "%s\n", any ? "" : " none");
}

static void print_latency(FILE *f, const char *label, json_object *h) {
        char a[32], b[32], c[32], d[32];
        int64_t n = jint(h, "count");

        if (n == 0) {
                fprintf(f, "%-14s none measured\n", label);
                return;
        }
        fprintf(f, "%-14s p50 %s, p90 %s, p99 %s, max %s (%" PRId64 " measured)\n", label,
                format_duration(jnum(h, "p50"), a, sizeof a), format_duration(jnum(h, "p90"), b, sizeof b),
                format_duration(jnum(h, "p99"), c, sizeof c), format_duration(jnum(h, "max"), d, sizeof d), n);
}

static void print_slowest(FILE *f, json_object *list, size_t max) {
        size_t n = MIN(jlen(list), max);
        char a[32], b[32];

        fprintf(f, "Slowest connections:\n");
        if (n == 0) {
                fprintf(f, "  (no device has connected yet)\n");
                return;
        }
        fprintf(f, "  %-12s %6s  %-11s %10s %10s %8s  %s\n", "DEVICE", "WORKER", "STATE", "MAX", "LAST", "CONNECTS",
                "BROKER");
        for (size_t i = 0; i < n; i++) {
                json_object *d = json_object_array_get_idx(list, i);
                fprintf(f, "  %-12s %6" PRId64 "  %-11s %10s %10s %8" PRId64 "  %s\n", or_dash(jstr(d, "id")),
                        jint(d, "worker"), or_dash(jstr(d, "state")),
                        format_duration(jnum(d, "max_connect_s"), a, sizeof a),
                        format_duration(jnum(d, "last_connect_s"), b, sizeof b), jint(d, "connects"),
                        or_dash(jstr(d, "broker")));
        }
}

static void print_failed(FILE *f, json_object *list, size_t max, size_t width) {
        size_t total = jlen(list), n = MIN(total, max);
        char a[32], b[32];

        fprintf(f, "Failed, or with an error (%zu%s):\n", total, total >= 50 ? "+" : "");
        if (total == 0) {
                fprintf(f, "  (none)\n");
                return;
        }
        fprintf(f, "  %-12s %-11s %10s %10s  %s\n", "DEVICE", "STATE", "FOR", "ERROR AGO", "LAST ERROR");
        for (size_t i = 0; i < n; i++) {
                json_object *d = json_object_array_get_idx(list, i);
                const char *e = or_dash(jstr(d, "last_error"));
                /* 50 columns before the error; a terminal gets it cut at its edge */
                int room = width > 52 ? (int) (width - 52) : 0;
                fprintf(f, "  %-12s %-11s %10s %10s  %.*s\n", or_dash(jstr(d, "id")), or_dash(jstr(d, "state")),
                        format_age(jstr(d, "state_since"), a, sizeof a),
                        format_age(jstr(d, "last_error_at"), b, sizeof b), width ? room : (int) strlen(e), e);
        }
        if (n < total)
                fprintf(f, "  … and %zu more\n", total - n);
}

/* The fleet summary; `width` 0 = no limit, `rows` the lines the lists may take. */
static void print_summary(FILE *f, const char *path, json_object *st, size_t width, size_t rows) {
        json_object *counters = jget(st, "counters"), *hist = jget(st, "histograms");
        char up[32];

        fprintf(f, "espfleetd at %s: %" PRId64 " devices, %" PRId64 " worker%s, up %s (since %s)\n", path,
                jint(st, "devices"), jint(st, "workers"), jint(st, "workers") == 1 ? "" : "s",
                format_duration(jnum(st, "uptime_s"), up, sizeof up), or_dash(jstr(st, "started")));
        fprintf(f, "%-14s %" PRId64 "/%" PRId64 "\n", "Online", jint(st, "online"), jint(st, "devices"));
        fprintf(f, "%-14s", "States");
        print_counts(f, jget(st, "states"));
        fprintf(f, "%-14s attempts %" PRId64 ", accepted %" PRId64 "\n", "Connections",
                jint(counters, "connect_attempts"), jint(counters, "connects"));
        fprintf(f, "%-14s", "Failures");
        print_counts(f, jget(counters, "connect_failures"));
        fprintf(f, "%-14s", "Disconnects");
        print_counts(f, jget(counters, "disconnects"));
        fprintf(f, "%-14s in %" PRId64 ", out %" PRId64 "\n", "Messages", jint(counters, "messages_in"),
                jint(counters, "messages_out"));
        fprintf(f, "%-14s %" PRId64 " (rollbacks %" PRId64 ")\n", "Reboots", jint(counters, "reboots"),
                jint(counters, "rollbacks"));
        fprintf(f, "%-14s started %" PRId64 ", outcomes", "OTA", jint(counters, "ota_started"));
        print_counts(f, jget(counters, "ota_results"));
        print_latency(f, "Connect time", jget(hist, "connect"));
        fprintf(f, "\n");
        size_t slow_max = SIZE_MAX, failed_max = SIZE_MAX;
        if (rows > 0) {
                /* the two lists share the rest of the screen, 3 lines of headings each */
                slow_max = MIN((size_t) TOP_SLOWEST_MAX, MAX(rows / 2, (size_t) 4) - 3);
                size_t used = MIN(jlen(jget(st, "slowest")), slow_max) + 3;
                failed_max = rows > used + 3 ? rows - used - 3 : 1;
        }
        print_slowest(f, jget(st, "slowest"), slow_max);
        fprintf(f, "\n");
        print_failed(f, jget(st, "failed"), failed_max, width);
}

static void print_device(FILE *f, json_object *d) {
        json_object *ota = jget(d, "ota"), *history = jget(ota, "history");
        char a[32], b[32];

        fprintf(f, "%s (worker %" PRId64 ")\n", or_dash(jstr(d, "id")), jint(d, "worker"));
        fprintf(f, "  %-14s %s since %s (%s)\n", "State", or_dash(jstr(d, "state")), or_dash(jstr(d, "state_since")),
                format_age(jstr(d, "state_since"), a, sizeof a));
        fprintf(f, "  %-14s %s\n", "Broker", or_dash(jstr(d, "broker")));
        fprintf(f, "  %-14s %s\n", "Firmware", or_dash(jstr(d, "version")));
        fprintf(f, "  %-14s %" PRId64 " (failed attempts %" PRId64 ", disconnects %" PRId64 ")\n", "Connects",
                jint(d, "connects"), jint(d, "connect_failures"), jint(d, "disconnects"));
        fprintf(f, "  %-14s last %s, slowest %s\n", "Connect time", format_duration(jnum(d, "last_connect_s"), a, sizeof a),
                format_duration(jnum(d, "max_connect_s"), b, sizeof b));
        fprintf(f, "  %-14s %" PRId64 " (rollbacks %" PRId64 ")\n", "Reboots", jint(d, "reboots"), jint(d, "rollbacks"));
        if (jstr(d, "last_error"))
                fprintf(f, "  %-14s %s\n  %-14s %s (%s ago)\n", "Last error", jstr(d, "last_error"), "",
                        or_dash(jstr(d, "last_error_at")), format_age(jstr(d, "last_error_at"), a, sizeof a));
        else
                fprintf(f, "  %-14s none\n", "Last error");
        fprintf(f, "  %-14s %" PRId64 " outcome%s, latest %s%s\n", "OTA", jint(ota, "count"),
                jint(ota, "count") == 1 ? "" : "s", or_dash(jstr(ota, "result")),
                json_object_get_boolean(jget(ota, "active")) ? ", a download is running" : "");
        if (jlen(history) == 0)
                return;
        fprintf(f, "    %-24s  %-30s %-16s %s\n", "AT", "RESULT", "VERSION", "DURATION");
        for (size_t i = 0; i < jlen(history); i++) {
                json_object *h = json_object_array_get_idx(history, i);
                fprintf(f, "    %-24s  %-30s %-16s %s\n", or_dash(jstr(h, "at")), or_dash(jstr(h, "result")),
                        or_dash(jstr(h, "version")), format_duration(jnum(h, "duration_s"), a, sizeof a));
        }
}

static int print_json(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_FLAGS);

        if (!s)
                return -ENOMEM;
        puts(s);
        return fflush(stdout) == 0 ? 0 : -errno;
}

/* Options every verb here takes. */
typedef struct Target {
        const char *socket, *config;
} Target;

enum {
        ARG_SOCKET = 0x100,
        ARG_JSON,
        ARG_FORMAT,
        ARG_INTERVAL,
        ARG_ALL,
        ARG_RANGE,
        ARG_URL,
};

static int target_check(const Target *t) {
        if (t->socket && t->config) {
                cli_error("--socket and -c are two ways to name one socket: give one of them");
                return -EINVAL;
        }
        return 0;
}

static void status_help(void) {
        printf("Usage: espfleet status [DEVICE] [--socket PATH | -c CONFIG] [--format text|json]\n\n"
               "Asks a running espfleetd: without DEVICE, the fleet summary (devices per state,\n"
               "counters, connection latency, the slowest devices and the failed ones with their\n"
               "last error); with DEVICE (esp-XXXXXX), that device: state, broker, connections,\n"
               "firmware, OTA history, last error.\n\n"
               "  --socket PATH   the daemon's control socket\n"
               "  -c CONFIG       the daemon's config: its control.socket\n"
               "  --format json   the daemon's answer as JSON (--json for short)\n"
               "Default socket: $RUNTIME_DIRECTORY/control, /run/espfleet/control (root),\n"
               "$XDG_RUNTIME_DIR/espfleet/control or /tmp/espfleet-$UID/control.\n");
}

int verb_status(int argc, char **argv) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, ARG_JSON },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_object_putp) json_object *req = NULL, *answer = NULL;
        _cleanup_free_ char *path = NULL;
        Target t = {};
        bool json = false;
        char err[1024] = "";
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case ARG_SOCKET:
                        t.socket = optarg;
                        break;
                case 'c':
                        t.config = optarg;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_FORMAT:
                        /* as every other verb says it; --json is short for it */
                        if (!streq(optarg, "json") && !streq(optarg, "text"))
                                return cli_error("--format '%s' is not one of text, json.", optarg), 2;
                        json = streq(optarg, "json");
                        break;
                case 'h':
                        status_help();
                        return 0;
                default:
                        return 2;
                }
        if (argc - optind > 1) {
                cli_error("status takes at most one DEVICE, not '%s' too", argv[optind + 1]);
                return 2;
        }
        if (target_check(&t) < 0)
                return 2;
        if (socket_path(t.socket, t.config, &path) < 0)
                return 1;

        const char *id = optind < argc ? argv[optind] : NULL;
        req = request_new(id ? "device" : "status");
        if (!req || (id && json_object_object_add(req, "id", json_object_new_string(id)) < 0)) {
                cli_error("out of memory");
                return 1;
        }
        r = daemon_call(path, req, &answer, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return 1;
        }
        if (json)
                return print_json(answer) < 0 ? 1 : 0;
        if (id)
                print_device(stdout, answer);
        else
                print_summary(stdout, path, answer, 0, 0);
        return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- top ---------------------------------------------------------------- */

static volatile sig_atomic_t top_quit, top_resized;

static void on_quit_signal(int sig) {
        top_quit = 1;
}

static void on_winch(int sig) {
        top_resized = 1;
}

/* Rates since the previous frame. */
typedef struct TopRates {
        double at;
        int64_t connects, messages_in, messages_out;
        bool have;
} TopRates;

static void top_frame(FILE *f, const char *path, json_object *st, TopRates *prev, size_t width, size_t rows) {
        json_object *counters = jget(st, "counters");
        TopRates cur = {
                .at = now_s(),
                .connects = jint(counters, "connects"),
                .messages_in = jint(counters, "messages_in"),
                .messages_out = jint(counters, "messages_out"),
                .have = true,
        };
        time_t t = time(NULL);
        struct tm tm;
        char clock[16] = "";

        if (localtime_r(&t, &tm))
                strftime(clock, sizeof clock, "%H:%M:%S", &tm);
        fprintf(f, "espfleet top - %s - q quits\n", clock);
        if (prev->have && cur.at > prev->at) {
                double dt = cur.at - prev->at;
                fprintf(f, "%-14s connects %.1f/s, messages in %.1f/s, out %.1f/s\n", "Rates",
                        (double) (cur.connects - prev->connects) / dt,
                        (double) (cur.messages_in - prev->messages_in) / dt,
                        (double) (cur.messages_out - prev->messages_out) / dt);
        } else
                fprintf(f, "%-14s (from the next frame on)\n", "Rates");
        *prev = cur;
        /* 13 lines above the lists, one kept free at the bottom */
        print_summary(f, path, st, width, rows == 0 ? 0 : rows > 16 ? rows - 14 : 2);
}

static void top_help(void) {
        printf("Usage: espfleet top [--socket PATH | -c CONFIG] [--interval S]\n\n"
               "A live view of a running espfleetd: the summary of 'espfleet status' with rates,\n"
               "redrawn every S seconds (default 1). q or Ctrl-C quits. When standard output is\n"
               "not a terminal, one frame is printed.\n");
}

static void terminal_size(size_t *width, size_t *rows) {
        struct winsize ws;

        *width = 80;
        *rows = 24;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) >= 0 && ws.ws_col > 0 && ws.ws_row > 0) {
                *width = ws.ws_col;
                *rows = ws.ws_row;
        }
}

/* One frame into a buffer, then onto the screen in one write: no flicker.
 * Every line is cleared to its end, and the rest of the screen below. */
static void top_draw(const char *path, json_object *st, const char *error, TopRates *prev) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, width, rows;
        FILE *f;

        terminal_size(&width, &rows);
        f = open_memstream(&buf, &len);
        if (!f)
                return;
        if (st)
                top_frame(f, path, st, prev, width, rows);
        else
                fprintf(f, "espfleet top - q quits\n\n%s\n(retrying)\n", error);
        fclose(f);

        fputs("\033[H", stdout);
        size_t line = 0;
        for (char *p = buf, *nl; p && *p && line + 1 < rows; p = nl ? nl + 1 : NULL, line++) {
                nl = strchr(p, '\n');
                size_t n = nl ? (size_t) (nl - p) : strlen(p);
                /* cut at the edge, counting bytes: the frame is ASCII but for "…" */
                fwrite(p, 1, MIN(n, width), stdout);
                fputs("\033[K\n", stdout);
        }
        fputs("\033[J", stdout);
        fflush(stdout);
}

/* The daemon's status for one frame; NULL and the reason in `err`. */
static json_object *top_fetch(const char *path, char *err, size_t errlen) {
        _cleanup_(json_object_putp) json_object *req = request_new("status");
        json_object *answer = NULL;

        if (!req) {
                snprintf(err, errlen, "out of memory");
                return NULL;
        }
        return daemon_call(path, req, &answer, err, errlen) < 0 ? NULL : answer;
}

int verb_top(int argc, char **argv) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "config", required_argument, NULL, 'c' },
                { "interval", required_argument, NULL, ARG_INTERVAL },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_free_ char *path = NULL;
        struct termios saved_tio;
        bool tio = false;
        double interval = 1;
        TopRates prev = {};
        Target t = {};
        int c;

        optind = 1;
        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case ARG_SOCKET:
                        t.socket = optarg;
                        break;
                case 'c':
                        t.config = optarg;
                        break;
                case ARG_INTERVAL: {
                        char *end = NULL;
                        errno = 0;
                        interval = strtod(optarg, &end);
                        if (errno != 0 || !end || *end || !(interval >= 0.1 && interval <= 3600)) {
                                cli_error("--interval '%s' is not a number of seconds from 0.1 to 3600", optarg);
                                return 2;
                        }
                        break;
                }
                case 'h':
                        top_help();
                        return 0;
                default:
                        return 2;
                }
        if (optind < argc) {
                cli_error("top takes no argument, not '%s'", argv[optind]);
                return 2;
        }
        if (target_check(&t) < 0)
                return 2;
        if (socket_path(t.socket, t.config, &path) < 0)
                return 1;

        if (!isatty(STDOUT_FILENO)) {
                char err[1024] = "";
                _cleanup_(json_object_putp) json_object *answer = top_fetch(path, err, sizeof err);
                if (!answer) {
                        cli_error("%s", err);
                        return 1;
                }
                top_frame(stdout, path, answer, &prev, 0, 0);
                return fflush(stdout) == 0 ? 0 : 1;
        }

        struct sigaction sa = { .sa_handler = on_quit_signal }, sw = { .sa_handler = on_winch };
        sigemptyset(&sa.sa_mask);
        sigemptyset(&sw.sa_mask);
        /* no SA_RESTART: the poll() below returns at once */
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGTERM, &sa, NULL);
        (void) sigaction(SIGHUP, &sa, NULL);
        (void) sigaction(SIGWINCH, &sw, NULL);
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) >= 0) {
                struct termios raw = saved_tio;
                /* keys one at a time, unechoed; ISIG stays, so Ctrl-C is SIGINT */
                raw.c_lflag &= ~(tcflag_t) (ICANON | ECHO);
                raw.c_cc[VMIN] = 0;
                raw.c_cc[VTIME] = 0;
                tio = tcsetattr(STDIN_FILENO, TCSANOW, &raw) >= 0;
        }
        /* the alternate screen, without the cursor */
        fputs("\033[?1049h\033[?25l\033[2J", stdout);

        while (!top_quit) {
                char error[1024] = "";
                json_object *st = top_fetch(path, error, sizeof error);
                top_draw(path, st, error, &prev);
                json_object_put(st);

                struct timespec end;
                clock_gettime(CLOCK_MONOTONIC, &end);
                double deadline = (double) end.tv_sec + (double) end.tv_nsec / 1e9 + interval;
                while (!top_quit && !top_resized) {
                        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
                        struct timespec now;
                        clock_gettime(CLOCK_MONOTONIC, &now);
                        double left = deadline - ((double) now.tv_sec + (double) now.tv_nsec / 1e9);
                        if (left <= 0)
                                break;
                        int k = poll(&p, tio ? 1 : 0, (int) (left * 1000) + 1);
                        if (k > 0 && (p.revents & POLLIN)) {
                                char key[16];
                                ssize_t n = read(STDIN_FILENO, key, sizeof key);
                                for (ssize_t i = 0; i < n; i++)
                                        if (key[i] == 'q' || key[i] == 'Q')
                                                top_quit = 1;
                                if (n == 0)
                                        tio = false;    /* end of input: wait on the clock alone */
                        } else if (k > 0)
                                tio = false;
                }
                top_resized = 0;
        }

        fputs("\033[?25h\033[?1049l", stdout);
        fflush(stdout);
        if (tio)
                (void) tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
        return 0;
}

/* ---- command ------------------------------------------------------------ */

static void command_help(void) {
        printf("Usage: espfleet command restart|power-cut|ota (DEVICE…|--all|--range A-B) [--url URL]\n"
               "                       [--socket PATH | -c CONFIG] [--format text|json]\n\n"
               "Has a running espfleetd act on devices, as an operator would:\n"
               "  restart     as /esp/restart: the device says goodbye and reboots\n"
               "  power-cut   power off at once (the broker publishes its will), then boot again\n"
               "  ota         as /esp/update/run: download and boot a new app (--url: from there\n"
               "              instead of the device's saved URL)\n"
               "Devices: their ids (esp-XXXXXX), --all, or --range A-B of manifest positions\n"
               "(0-based lines of manifest.csv). --format json (or --json): the daemon's answer\n"
               "as JSON.\n");
}

static int parse_range(const char *s, int64_t *a, int64_t *b) {
        _cleanup_free_ char *copy = strdup(s);
        uint64_t x, y;
        char *dash;

        if (!copy)
                return -ENOMEM;
        dash = strchr(copy, '-');
        if (dash)
                *dash = 0;
        if (safe_atou64(copy, 10, &x) < 0 || (dash && safe_atou64(dash + 1, 10, &y) < 0) || x > INT64_MAX)
                return -EINVAL;
        if (!dash)
                y = x;
        if (y < x || y > INT64_MAX)
                return -EINVAL;
        *a = (int64_t) x;
        *b = (int64_t) y;
        return 0;
}

int verb_command(int argc, char **argv) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "config", required_argument, NULL, 'c' },
                { "all", no_argument, NULL, ARG_ALL },
                { "range", required_argument, NULL, ARG_RANGE },
                { "url", required_argument, NULL, ARG_URL },
                { "json", no_argument, NULL, ARG_JSON },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        static const char *const actions[] = { "restart", "power-cut", "ota" };
        _cleanup_(json_object_putp) json_object *req = NULL, *answer = NULL;
        _cleanup_free_ char *path = NULL;
        const char *range = NULL, *url = NULL, *action;
        bool all = false, json = false, known = false;
        int64_t first = 0, last = 0;
        Target t = {};
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case ARG_SOCKET:
                        t.socket = optarg;
                        break;
                case 'c':
                        t.config = optarg;
                        break;
                case ARG_ALL:
                        all = true;
                        break;
                case ARG_RANGE:
                        range = optarg;
                        break;
                case ARG_URL:
                        url = optarg;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_FORMAT:
                        /* as every other verb says it; --json is short for it */
                        if (!streq(optarg, "json") && !streq(optarg, "text"))
                                return cli_error("--format '%s' is not one of text, json.", optarg), 2;
                        json = streq(optarg, "json");
                        break;
                case 'h':
                        command_help();
                        return 0;
                default:
                        return 2;
                }
        if (optind >= argc) {
                cli_error("command needs an action: restart, power-cut or ota");
                return 2;
        }
        action = argv[optind++];
        for (size_t i = 0; i < ELEMENTSOF(actions); i++)
                known = known || streq(action, actions[i]);
        if (!known) {
                cli_error("unknown action '%s': restart, power-cut or ota", action);
                return 2;
        }
        size_t n_ids = (size_t) (argc - optind);
        if ((n_ids > 0) + all + !!range != 1) {
                cli_error("name the devices one way: DEVICE…, --all or --range A-B");
                return 2;
        }
        if (url && !streq(action, "ota")) {
                cli_error("--url goes with ota only");
                return 2;
        }
        if (range && parse_range(range, &first, &last) < 0) {
                cli_error("--range '%s' is not A-B, two manifest positions with A <= B", range);
                return 2;
        }
        if (target_check(&t) < 0)
                return 2;
        if (socket_path(t.socket, t.config, &path) < 0)
                return 1;

        req = request_new("command");
        r = req ? 0 : -ENOMEM;
        if (r >= 0 && json_object_object_add(req, "action", json_object_new_string(action)) < 0)
                r = -ENOMEM;
        if (r >= 0 && all && json_object_object_add(req, "all", json_object_new_boolean(true)) < 0)
                r = -ENOMEM;
        if (r >= 0 && range) {
                json_object *a = json_object_new_array_ext(2);
                if (!a || json_object_object_add(req, "range", a) < 0 ||
                    json_object_array_add(a, json_object_new_int64(first)) < 0 ||
                    json_object_array_add(a, json_object_new_int64(last)) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0 && n_ids > 0) {
                json_object *a = json_object_new_array_ext((int) n_ids);
                if (!a || json_object_object_add(req, "ids", a) < 0)
                        r = -ENOMEM;
                for (int i = optind; r >= 0 && i < argc; i++)
                        if (json_object_array_add(a, json_object_new_string(argv[i])) < 0)
                                r = -ENOMEM;
        }
        if (r >= 0 && url && json_object_object_add(req, "url", json_object_new_string(url)) < 0)
                r = -ENOMEM;
        if (r < 0) {
                cli_error("out of memory");
                return 1;
        }
        char err[1024] = "";
        r = daemon_call(path, req, &answer, err, sizeof err);
        if (r < 0) {
                cli_error("%s", err);
                return 1;
        }
        if (json)
                return print_json(answer) < 0 ? 1 : 0;
        int64_t sent = jint(answer, "sent");
        printf("%s: sent to %" PRId64 " device%s\n", action, sent, sent == 1 ? "" : "s");
        return fflush(stdout) == 0 ? 0 : 1;
}
