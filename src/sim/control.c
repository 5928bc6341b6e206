/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_MAIN

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "basic/time-util.h"
#include "basic/errmsg.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "metrics/metrics-json.h"
#include "sim/control-client.h"
#include "sim/control.h"
#include "sim/device.h"

#define CLIENTS_MAX 64
#define SLOWEST_MAX 10
#define FAILED_MAX 50
#define ACCEPT_RETRY_USEC 1000000
#define QUOTE_MAX 64                    /* bytes of a user string quoted back in an error */

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(json_tokener *, json_tokener_free);

typedef struct IndexEntry {
        char id[sizeof(((MetricsDevice *) NULL)->id)];
        unsigned worker;
        size_t slot;                    /* the record in the worker's block */
} IndexEntry;

struct Control {
        sd_event *event;                /* not owned */
        ControlContext ctx;
        char *path;
        int fd;
        bool bound;                     /* the socket file at `path` is ours: */
        dev_t dev;                      /* control_free() removes only that one, */
        ino_t ino;                      /* not one a later daemon put there */
        sd_event_source *io, *accept_retry;
        ControlClient *clients[CLIENTS_MAX];
        size_t n_clients;
        IndexEntry *index;              /* by id: "device" requests and command "ids" */
        size_t n_index;
        bool index_complete;            /* every record had its id when it was built */
};

int control_socket_default_path(char **ret) {
        const char *dir;
        char *p = NULL;
        int n;

        dir = getenv("RUNTIME_DIRECTORY");
        if (dir && *dir == '/')
                /* systemd lists every RuntimeDirectory=, separated by ':' */
                n = asprintf(&p, "%.*s/control", (int) strcspn(dir, ":"), dir);
        else if (geteuid() == 0)
                n = asprintf(&p, "/run/espfleet/control");
        else if ((dir = getenv("XDG_RUNTIME_DIR")) && *dir == '/')
                n = asprintf(&p, "%s/espfleet/control", dir);
        else
                n = asprintf(&p, "/tmp/espfleet-%u/control", (unsigned) geteuid());
        if (n < 0)
                return -ENOMEM;
        *ret = p;
        return 0;
}

/* ---- answers ------------------------------------------------------------ */

/* A user's string for an error message: at most QUOTE_MAX bytes, cut at a
 * UTF-8 character boundary (the request was valid UTF-8; the answer stays so). */
static const char *quote(const char *s, char *buf, size_t size) {
        size_t n = strlen(s);

        if (n <= QUOTE_MAX && n < size) {
                memcpy(buf, s, n + 1);
                return buf;
        }
        n = MIN((size_t) QUOTE_MAX, size - 4);
        while (n > 0 && ((uint8_t) s[n] & 0xc0) == 0x80)
                n--;
        snprintf(buf, size, "%.*s…", (int) n, s);
        return buf;
}

static json_object *error_json(const char *fmt, ...) _printf_(1, 2);
static json_object *error_json(const char *fmt, ...) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *s;
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (!o)
                return NULL;
        s = json_object_new_string(msg);
        if (!s || json_object_object_add(o, "error", s) < 0) {
                json_object_put(s);
                return NULL;
        }
        return TAKE_PTR(o);
}

static int add(json_object *o, const char *key, json_object *v) {
        return metrics_json_add(o, key, v);
}

static int append(json_object *a, json_object *v) {
        return metrics_json_append(a, v);
}

/* Records a worker's block holds for its share (none without a block). */
static size_t worker_records(const ControlWorker *w) {
        return w->metrics ? MIN(w->count, (size_t) w->metrics->n_devices) : 0;
}

static json_object *device_json(const MetricsDevice *d, unsigned worker) {
        return metrics_device_json(d, device_state_to_string((DeviceState) d->state), worker);
}

/* ---- the id index ------------------------------------------------------- */

static int index_compare(const void *a, const void *b) {
        return strcmp(((const IndexEntry *) a)->id, ((const IndexEntry *) b)->id);
}

/* A worker fills its records' ids as it creates its devices: an index
 * built before every worker got that far is rebuilt on a miss. */
static int index_build(Control *c) {
        size_t n = 0, k = 0, share = 0;
        IndexEntry *idx;

        for (unsigned w = 0; w < c->ctx.n_workers; w++) {
                n += worker_records(&c->ctx.workers[w]);
                share += c->ctx.workers[w].count;
        }
        idx = calloc(MAX(n, (size_t) 1), sizeof *idx);
        if (!idx)
                return -ENOMEM;
        for (unsigned w = 0; w < c->ctx.n_workers; w++) {
                const ControlWorker *cw = &c->ctx.workers[w];
                for (size_t i = 0; i < worker_records(cw); i++) {
                        MetricsDevice d;
                        metrics_device_read(&cw->metrics->devices[i], &d);
                        if (!d.id[0])
                                continue;
                        memcpy(idx[k].id, d.id, sizeof idx[k].id);
                        idx[k].worker = w;
                        idx[k].slot = i;
                        k++;
                }
        }
        qsort(idx, k, sizeof *idx, index_compare);
        free(c->index);
        c->index = idx;
        c->n_index = k;
        c->index_complete = k == share;
        return 0;
}

/* 0, -ENOENT, or -ENOMEM. */
static int index_find(Control *c, const char *id, const IndexEntry **ret) {
        IndexEntry key = {};
        const IndexEntry *e = NULL;
        size_t len = strlen(id);
        int r;

        if (len == 0 || len >= sizeof key.id)
                return -ENOENT;
        memcpy(key.id, id, len);
        if (!c->index) {
                r = index_build(c);
                if (r < 0)
                        return r;
        }
        e = bsearch(&key, c->index, c->n_index, sizeof *c->index, index_compare);
        if (!e && !c->index_complete) {
                r = index_build(c);
                if (r < 0)
                        return r;
                e = bsearch(&key, c->index, c->n_index, sizeof *c->index, index_compare);
        }
        if (!e)
                return -ENOENT;
        *ret = e;
        return 0;
}

/* ---- status ------------------------------------------------------------- */

typedef struct Ranked {
        MetricsDevice d;
        unsigned worker;
        uint64_t key, tie;
} Ranked;

/* The top `max` by (key, tie), highest first. */
typedef struct Ranking {
        Ranked *items;
        size_t n, max;
} Ranking;

static bool ranks_above(uint64_t key, uint64_t tie, const Ranked *r) {
        return key > r->key || (key == r->key && tie > r->tie);
}

static void ranking_offer(Ranking *r, const MetricsDevice *d, unsigned worker, uint64_t key, uint64_t tie) {
        size_t pos = r->n;

        while (pos > 0 && ranks_above(key, tie, &r->items[pos - 1]))
                pos--;
        if (pos >= r->max)
                return;
        size_t keep = MIN(r->n, r->max - 1);    /* the last one falls off a full ranking */
        memmove(&r->items[pos + 1], &r->items[pos], (keep - pos) * sizeof *r->items);
        r->items[pos] = (Ranked) { .d = *d, .worker = worker, .key = key, .tie = tie };
        r->n = keep + 1;
}

static json_object *ranking_json(const Ranking *r) {
        _cleanup_(json_object_putp) json_object *a = json_object_new_array_ext((int) r->n);

        if (!a)
                return NULL;
        for (size_t i = 0; i < r->n; i++)
                if (append(a, device_json(&r->items[i].d, r->items[i].worker)) < 0)
                        return NULL;
        return TAKE_PTR(a);
}

static bool device_in_trouble(const MetricsDevice *d) {
        return d->state == DEVICE_FAILED || d->state == DEVICE_NO_CONNECT || d->state == DEVICE_BACKOFF ||
               d->last_error[0];
}

static json_object *method_status(Control *c) {
        _cleanup_free_ MetricsBlock *totals = metrics_totals_new();
        _cleanup_free_ Ranked *slow_items = calloc(SLOWEST_MAX, sizeof(Ranked));
        _cleanup_free_ Ranked *failed_items = calloc(FAILED_MAX, sizeof(Ranked));
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *states = json_object_new_object();
        Ranking slowest = { .items = slow_items, .max = SLOWEST_MAX };
        Ranking failed = { .items = failed_items, .max = FAILED_MAX };
        uint64_t in_state[_DEVICE_STATE_MAX] = {}, now = now_usec(CLOCK_REALTIME);
        size_t n_devices = 0;
        char started[METRICS_ISO_TIME_MAX];

        if (!totals || !slow_items || !failed_items || !o || !states)
                return NULL;
        for (unsigned w = 0; w < c->ctx.n_workers; w++) {
                const ControlWorker *cw = &c->ctx.workers[w];
                n_devices += cw->count;
                if (!cw->metrics)
                        continue;
                metrics_totals_add(totals, cw->metrics);
                for (size_t i = 0; i < worker_records(cw); i++) {
                        MetricsDevice d;
                        metrics_device_read(&cw->metrics->devices[i], &d);
                        if (d.state < _DEVICE_STATE_MAX)
                                in_state[d.state]++;
                        if (d.connects > 0)
                                ranking_offer(&slowest, &d, w, d.max_connect_usec, 0);
                        if (device_in_trouble(&d))
                                ranking_offer(&failed, &d, w, d.last_error[0] ? d.last_error_usec : 0,
                                              d.state_since_usec);
                }
        }
        for (DeviceState s = 0; s < _DEVICE_STATE_MAX; s++)
                if (add(states, device_state_to_string(s), json_object_new_uint64(in_state[s])) < 0)
                        return NULL;

        if (add(o, "devices", json_object_new_uint64(n_devices)) < 0 ||
            add(o, "workers", json_object_new_int64(c->ctx.n_workers)) < 0 ||
            add(o, "started", json_object_new_string(metrics_format_time(c->ctx.started_usec, started,
                                                                         sizeof started))) < 0 ||
            add(o, "uptime_s", metrics_seconds_json(now > c->ctx.started_usec ? now - c->ctx.started_usec : 0)) < 0 ||
            add(o, "states", TAKE_PTR(states)) < 0 ||
            add(o, "online", json_object_new_uint64(in_state[DEVICE_ONLINE])) < 0 ||
            add(o, "counters", metrics_counters_json(totals)) < 0 ||
            add(o, "histograms", metrics_histograms_json(totals)) < 0 ||
            add(o, "slowest", ranking_json(&slowest)) < 0 ||
            add(o, "failed", ranking_json(&failed)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* ---- device, devices ---------------------------------------------------- */

static json_object *method_device(Control *c, json_object *req) {
        const IndexEntry *e;
        json_object *id;
        MetricsDevice d;
        char q[QUOTE_MAX + 8];
        int r;

        if (!json_object_object_get_ex(req, "id", &id) || !json_object_is_type(id, json_type_string))
                return error_json("bad request: \"device\" needs an \"id\" string");
        r = index_find(c, json_object_get_string(id), &e);
        if (r == -ENOENT)
                return error_json("no device '%s' in this daemon", quote(json_object_get_string(id), q, sizeof q));
        if (r < 0)
                return NULL;
        metrics_device_read(&c->ctx.workers[e->worker].metrics->devices[e->slot], &d);
        return device_json(&d, e->worker);
}

static json_object *method_devices(Control *c) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *a;

        if (!o)
                return NULL;
        a = json_object_new_array();
        if (add(o, "devices", a) < 0)
                return NULL;
        for (unsigned w = 0; w < c->ctx.n_workers; w++) {
                const ControlWorker *cw = &c->ctx.workers[w];
                for (size_t i = 0; i < worker_records(cw); i++) {
                        MetricsDevice d;
                        metrics_device_read(&cw->metrics->devices[i], &d);
                        if (append(a, device_json(&d, w)) < 0)
                                return NULL;
                }
        }
        return TAKE_PTR(o);
}

/* ---- command ------------------------------------------------------------ */

static const char *const action_table[_WORKER_COMMAND_MAX] = {
        [WORKER_COMMAND_RESTART] = "restart",
        [WORKER_COMMAND_POWER_CUT] = "power-cut",
        [WORKER_COMMAND_OTA] = "ota",
};

/* A run of consecutive records of one worker: one WorkerCommand. */
typedef struct Run {
        unsigned worker;
        size_t slot, count;
} Run;

static int run_compare(const void *a, const void *b) {
        const Run *x = a, *y = b;

        if (x->worker != y->worker)
                return x->worker < y->worker ? -1 : 1;
        return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* Sorts single-device runs and merges the consecutive ones (and repeats). */
static size_t runs_merge(Run *runs, size_t n) {
        size_t k = 0;

        qsort(runs, n, sizeof *runs, run_compare);
        for (size_t i = 0; i < n; i++) {
                if (k > 0 && runs[k - 1].worker == runs[i].worker &&
                    runs[i].slot <= runs[k - 1].slot + runs[k - 1].count) {
                        size_t end = MAX(runs[k - 1].slot + runs[k - 1].count, runs[i].slot + runs[i].count);
                        runs[k - 1].count = end - runs[k - 1].slot;
                        continue;
                }
                runs[k++] = runs[i];
        }
        return k;
}

/* The runs of the devices named in "ids"; an error answer in *ret_error. */
static int runs_for_ids(Control *c, json_object *ids, Run **ret, size_t *ret_n, json_object **ret_error) {
        size_t n = json_object_is_type(ids, json_type_array) ? json_object_array_length(ids) : 0;
        _cleanup_free_ Run *runs = NULL;
        char q[QUOTE_MAX + 8];
        int r;

        if (n == 0) {
                *ret_error = error_json("bad request: \"ids\" is a non-empty array of device ids");
                return -EINVAL;
        }
        runs = calloc(n, sizeof *runs);
        if (!runs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *id = json_object_array_get_idx(ids, i);
                const IndexEntry *e;

                if (!json_object_is_type(id, json_type_string)) {
                        *ret_error = error_json("bad request: \"ids\"[%zu] is not a string", i);
                        return -EINVAL;
                }
                r = index_find(c, json_object_get_string(id), &e);
                if (r == -ENOENT) {
                        *ret_error = error_json("no device '%s' in this daemon",
                                                quote(json_object_get_string(id), q, sizeof q));
                        return r;
                }
                if (r < 0)
                        return r;
                runs[i] = (Run) { .worker = e->worker, .slot = e->slot, .count = 1 };
        }
        *ret_n = runs_merge(runs, n);
        *ret = TAKE_PTR(runs);
        return 0;
}

/* The runs of manifest positions [first, last], cut at the workers' shares. */
static int runs_for_positions(Control *c, size_t first, size_t last, Run **ret, size_t *ret_n) {
        _cleanup_free_ Run *runs = calloc(MAX(c->ctx.n_workers, 1u), sizeof *runs);
        size_t k = 0;

        if (!runs)
                return -ENOMEM;
        for (unsigned w = 0; w < c->ctx.n_workers; w++) {
                const ControlWorker *cw = &c->ctx.workers[w];
                if (cw->count == 0)
                        continue;
                size_t lo = MAX(first, cw->pos_first), hi = MIN(last, cw->pos_first + cw->count - 1);
                if (lo > hi)
                        continue;
                runs[k++] = (Run) { .worker = w, .slot = lo - cw->pos_first, .count = hi - lo + 1 };
        }
        *ret_n = k;
        *ret = TAKE_PTR(runs);
        return 0;
}

/* The daemon's share: positions [*first, *last]. false if it has none. */
static bool share_bounds(Control *c, size_t *first, size_t *last) {
        bool any = false;

        for (unsigned w = 0; w < c->ctx.n_workers; w++) {
                const ControlWorker *cw = &c->ctx.workers[w];
                if (cw->count == 0)
                        continue;
                if (!any || cw->pos_first < *first)
                        *first = cw->pos_first;
                if (!any || cw->pos_first + cw->count - 1 > *last)
                        *last = cw->pos_first + cw->count - 1;
                any = true;
        }
        return any;
}

static json_object *method_command(Control *c, json_object *req) {
        static const char *const keys[] = { "method", "action", "ids", "all", "range", "url" };
        json_object *action, *ids = NULL, *all = NULL, *range = NULL, *url = NULL, *error = NULL;
        _cleanup_free_ Run *runs = NULL;
        WorkerCommand cmd = { .magic = WORKER_COMMAND_MAGIC };
        size_t n_runs = 0, sent = 0, missed = 0, first = 0, last = 0;
        int type = -1, r, send_error = 0;
        unsigned failed_worker = 0;
        char q[QUOTE_MAX + 8];

        json_object_object_foreach(req, key, val) {
                bool known = false;
                (void) val;
                for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                        known = known || streq(key, keys[i]);
                if (!known)
                        return error_json("bad request: unknown key '%s' in a command (%s)", quote(key, q, sizeof q),
                                          "action, ids, all, range, url");
        }
        if (!json_object_object_get_ex(req, "action", &action) || !json_object_is_type(action, json_type_string))
                return error_json("bad request: a command needs an \"action\" (restart, power-cut, ota)");
        for (size_t i = 0; i < ELEMENTSOF(action_table); i++)
                if (action_table[i] && streq(json_object_get_string(action), action_table[i]))
                        type = (int) i;
        if (type < 0)
                return error_json("unknown action '%s' (restart, power-cut, ota)",
                                  quote(json_object_get_string(action), q, sizeof q));
        cmd.type = (uint32_t) type;

        bool has_ids = json_object_object_get_ex(req, "ids", &ids), has_all = json_object_object_get_ex(req, "all", &all),
             has_range = json_object_object_get_ex(req, "range", &range);
        if (has_ids + has_all + has_range != 1)
                return error_json("bad request: a command names its devices with exactly one of \"ids\", \"all\" "
                                  "and \"range\"");
        if (json_object_object_get_ex(req, "url", &url)) {
                if (type != WORKER_COMMAND_OTA)
                        return error_json("bad request: \"url\" goes with the action ota only");
                if (!json_object_is_type(url, json_type_string))
                        return error_json("bad request: \"url\" is a string");
                if ((size_t) json_object_get_string_len(url) >= sizeof cmd.url)
                        return error_json("bad request: the url is longer than %zu bytes", sizeof cmd.url - 1);
                snprintf(cmd.url, sizeof cmd.url, "%s", json_object_get_string(url));
        }
        if (!share_bounds(c, &first, &last))
                return error_json("this daemon runs no devices");

        if (has_ids) {
                r = runs_for_ids(c, ids, &runs, &n_runs, &error);
                if (r < 0)
                        return error;   /* NULL, out of memory, without one */
        } else if (has_all) {
                if (!json_object_is_type(all, json_type_boolean) || !json_object_get_boolean(all))
                        return error_json("bad request: \"all\" is true or absent");
                r = runs_for_positions(c, first, last, &runs, &n_runs);
                if (r < 0)
                        return NULL;
        } else {
                /* json-c asserts on array calls made on anything else: the type first */
                bool pair = json_object_is_type(range, json_type_array) && json_object_array_length(range) == 2;
                json_object *a = pair ? json_object_array_get_idx(range, 0) : NULL,
                            *b = pair ? json_object_array_get_idx(range, 1) : NULL;
                if (!json_object_is_type(a, json_type_int) || !json_object_is_type(b, json_type_int))
                        return error_json("bad request: \"range\" is [first, last], two manifest positions");
                int64_t lo = json_object_get_int64(a), hi = json_object_get_int64(b);
                if (lo < 0 || hi < lo)
                        return error_json("bad request: range [%" PRId64 ", %" PRId64 "] is empty or negative", lo, hi);
                if ((uint64_t) lo < first || (uint64_t) hi > last)
                        return error_json("range [%" PRId64 ", %" PRId64 "] is outside this daemon's devices "
                                          "(positions %zu..%zu)", lo, hi, first, last);
                r = runs_for_positions(c, (size_t) lo, (size_t) hi, &runs, &n_runs);
                if (r < 0)
                        return NULL;
        }

        for (size_t i = 0; i < n_runs; i++) {
                const ControlWorker *cw = &c->ctx.workers[runs[i].worker];
                cmd.pos_first = cw->pos_first + runs[i].slot;
                cmd.count = runs[i].count;
                r = c->ctx.send_command(c->ctx.owner, runs[i].worker, &cmd);
                if (r < 0) {
                        if (send_error == 0) {
                                send_error = r;
                                failed_worker = runs[i].worker;
                        }
                        missed += runs[i].count;
                        continue;
                }
                sent += runs[i].count;
        }
        if (send_error < 0)
                log_warning_errno(send_error, "Operator command %s: worker %u did not take it: %m; %zu of %zu "
                                  "device(s) not reached", action_table[type], failed_worker, missed, sent + missed);
        else
                log_info("Operator command %s%s%s: %zu device(s), in %zu message(s) to the workers",
                         action_table[type], cmd.url[0] ? " from " : "", cmd.url, sent, n_runs);

        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        if (!o || add(o, "sent", json_object_new_uint64(sent)) < 0)
                return NULL;
        if (send_error < 0) {
                char msg[256];
                snprintf(msg, sizeof msg, "worker %u did not take the command (%s): %zu device(s) not reached",
                         failed_worker, strerror(-send_error), missed);
                if (add(o, "error", json_object_new_string(msg)) < 0)
                        return NULL;
        }
        return TAKE_PTR(o);
}

/* ---- requests ----------------------------------------------------------- */

static json_object *handle_request(void *userdata, const char *line, size_t len) {
        Control *c = userdata;
        _cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new_ex(16);
        _cleanup_(json_object_putp) json_object *req = NULL;
        enum json_tokener_error e;
        json_object *m;
        const char *method;
        char q[QUOTE_MAX + 8];

        if (!tok)
                return NULL;
        if (memchr(line, 0, len))
                return error_json("bad request: a NUL byte at byte %zu", (size_t) ((const char *) memchr(line, 0, len) - line));
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        /* the NUL after the line tells the tokener that the input ends there */
        req = json_tokener_parse_ex(tok, line, (int) len + 1);
        e = json_tokener_get_error(tok);
        if (e != json_tokener_success || !req)
                return error_json("bad request: not JSON: %s at byte %zu",
                                  e == json_tokener_success ? "nothing" : json_tokener_error_desc(e),
                                  json_tokener_get_parse_end(tok));
        if (!json_object_is_type(req, json_type_object))
                return error_json("bad request: a request is a JSON object, like {\"method\":\"status\"}");
        if (!json_object_object_get_ex(req, "method", &m) || !json_object_is_type(m, json_type_string))
                return error_json("bad request: no \"method\" string (status, device, devices, command)");
        method = json_object_get_string(m);
        if (streq(method, "status"))
                return method_status(c);
        if (streq(method, "device"))
                return method_device(c, req);
        if (streq(method, "devices"))
                return method_devices(c);
        if (streq(method, "command"))
                return method_command(c, req);
        return error_json("unknown method '%s' (status, device, devices, command)", quote(method, q, sizeof q));
}

/* ---- the socket --------------------------------------------------------- */

static void client_done(void *userdata, ControlClient *cl) {
        Control *c = userdata;

        for (size_t i = 0; i < c->n_clients; i++)
                if (c->clients[i] == cl) {
                        c->clients[i] = c->clients[--c->n_clients];
                        break;
                }
        control_client_free(cl);
}

static int on_accept_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Control *c = userdata;

        (void) sd_event_source_set_enabled(c->io, SD_EVENT_ON);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        static const char busy[] = "{\"error\":\"too many control connections\"}\n";
        Control *c = userdata;
        ControlClient *cl;
        int cfd, r;

        for (;;) {
                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        /* out of fds, say: the socket stays readable, so pause instead of spinning */
                        log_warning_errno(errno, "Control socket %s: cannot accept a connection: %m, retrying in 1 s",
                                          c->path);
                        if (c->accept_retry)
                                r = sd_event_source_set_time_relative(c->accept_retry, ACCEPT_RETRY_USEC);
                        else
                                r = sd_event_add_time_relative(c->event, &c->accept_retry, CLOCK_MONOTONIC,
                                                               ACCEPT_RETRY_USEC, 100000, on_accept_retry, c);
                        if (r >= 0)
                                r = sd_event_source_set_enabled(c->accept_retry, SD_EVENT_ONESHOT);
                        if (r >= 0)
                                (void) sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
                        return 0;
                }
                if (c->n_clients >= CLIENTS_MAX) {
                        (void) send(cfd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
                        close(cfd);
                        log_warning("Control socket %s: %u connections are open, refusing one more", c->path,
                                    CLIENTS_MAX);
                        continue;
                }
                r = control_client_new(c->event, cfd, handle_request, client_done, c, &cl);
                if (r < 0) {
                        log_warning_errno(r, "Control socket %s: cannot serve a connection: %m, ignoring", c->path);
                        continue;
                }
                c->clients[c->n_clients++] = cl;
        }
}

static int make_parent(const char *path, char *err, size_t errlen) {
        _cleanup_free_ char *dir = strdup(path);
        struct stat st;
        char *slash;
        int r;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0;       /* the working directory, or / */
        *slash = 0;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot create its directory '%s': %s", path, dir,
                            strerror(-r));
        }
        if (stat(dir, &st) < 0) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot look at its directory '%s': %s", path, dir,
                            strerror(-r));
        }
        if (!S_ISDIR(st.st_mode))
                return errf(err, errlen, -ENOTDIR, "control socket '%s': '%s' is not a directory", path, dir);
        /* a directory of another user (a /tmp/espfleet-UID made by someone
         * else) would let that user put their own socket in our place */
        if (st.st_uid != geteuid() && st.st_uid != 0)
                return errf(err, errlen, -EPERM, "control socket '%s': its directory '%s' belongs to uid %u, not to us",
                            path, dir, (unsigned) st.st_uid);
        return 0;
}

/* A socket file at the path: another daemon's (refuse), or a dead one's (remove). */
static int replace_stale(const char *path, const struct sockaddr_un *sa, socklen_t salen, char *err, size_t errlen) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot look at it: %s", path, strerror(-r));
        }
        if (!S_ISSOCK(st.st_mode))
                return errf(err, errlen, -EEXIST, "control socket '%s': the path exists and is not a socket, "
                            "refusing to replace it", path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot create a socket: %s", path, strerror(-r));
        }
        /* a listener with a full backlog answers EAGAIN: it is alive too */
        if (connect(fd, (const struct sockaddr *) sa, salen) >= 0 || errno == EAGAIN || errno == EINPROGRESS)
                return errf(err, errlen, -EADDRINUSE, "control socket '%s': another espfleetd answers on it", path);
        if (errno != ECONNREFUSED && errno != ENOENT) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot tell whether a daemon listens on it: %s",
                            path, strerror(-r));
        }
        if (unlink(path) < 0 && errno != ENOENT) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot remove the stale socket: %s", path,
                            strerror(-r));
        }
        log_info("Control socket %s was left by a daemon that is gone: replacing it", path);
        return 0;
}

static int control_listen(Control *c, char *err, size_t errlen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(c->path);
        socklen_t salen;
        struct stat st;
        mode_t mask;
        int r;

        if (len == 0 || len >= sizeof sa.sun_path)
                return errf(err, errlen, -ENAMETOOLONG, "control socket '%s': a socket path is 1 to %zu bytes long",
                            c->path, sizeof sa.sun_path - 1);
        memcpy(sa.sun_path, c->path, len);
        salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1);

        r = make_parent(c->path, err, errlen);
        if (r < 0)
                return r;
        r = replace_stale(c->path, &sa, salen, err, errlen);
        if (r < 0)
                return r;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot create a socket: %s", c->path, strerror(-r));
        }
        /* the file is made 0600: only our user (and root) may connect; we
         * are the only thread, so the process-wide umask is ours for now */
        mask = umask(0177);
        r = bind(c->fd, (const struct sockaddr *) &sa, salen) < 0 ? -errno : 0;
        (void) umask(mask);
        if (r == -EADDRINUSE)
                return errf(err, errlen, r, "control socket '%s': another process bound it just now", c->path);
        if (r < 0)
                return errf(err, errlen, r, "control socket '%s': cannot bind: %s", c->path, strerror(-r));
        if (stat(c->path, &st) >= 0) {
                c->bound = true;
                c->dev = st.st_dev;
                c->ino = st.st_ino;
        }
        if (listen(c->fd, SOMAXCONN) < 0) {
                r = -errno;
                return errf(err, errlen, r, "control socket '%s': cannot listen: %s", c->path, strerror(-r));
        }
        r = sd_event_add_io(c->event, &c->io, c->fd, EPOLLIN, on_accept, c);
        if (r < 0)
                return errf(err, errlen, r, "control socket '%s': cannot watch it: %s", c->path, strerror(-r));
        return 0;
}

int control_new(sd_event *event, const char *path, const ControlContext *ctx, Control **ret, char *err,
                size_t errlen) {
        _cleanup_(control_freep) Control *c = calloc(1, sizeof *c);
        int r;

        if (!c)
                return -ENOMEM;
        c->event = event;
        c->ctx = *ctx;
        c->fd = -EBADF;
        if (path && *path)
                c->path = strdup(path);
        else if (control_socket_default_path(&c->path) < 0)
                c->path = NULL;
        if (!c->path)
                return errf(err, errlen, -ENOMEM, "control socket: out of memory");
        r = control_listen(c, err, errlen);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

Control *control_free(Control *c) {
        struct stat st;

        if (!c)
                return NULL;
        while (c->n_clients > 0)
                control_client_free(c->clients[--c->n_clients]);
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->accept_retry);
        if (c->fd >= 0)
                close(c->fd);
        if (c->bound && lstat(c->path, &st) >= 0 && st.st_dev == c->dev && st.st_ino == c->ino)
                (void) unlink(c->path);
        free(c->index);
        free(c->path);
        free(c);
        return NULL;
}

const char *control_path(const Control *c) {
        return c->path;
}
