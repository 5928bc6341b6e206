/* SPDX-License-Identifier: MIT */
/* espfleetd: the main process forks (and execs) one worker per share of the
 * fleet, supervises them, aggregates their counters and speaks to systemd
 * (READY=1, STATUS=, WATCHDOG=1, SIGTERM, SIGHUP). */
#define LOG_TOPIC LOG_TOPIC_MAIN

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <syslog.h>

#include "basic/time-util.h"
#include "basic/errmsg.h"
#include "basic/log.h"
#include "basic/parse-util.h"
#include "fleet/fleet-dir.h"
#include "fleet/shard.h"
#include "metrics/metrics-prometheus.h"
#include "metrics/metrics.h"
#include "basic/progress.h"
#include "sim/console.h"
#include "sim/device.h"
#include "sim/probe.h"
#include "sim/report.h"
#include "sim/scenario.h"
#include "transport/http-server.h"
#include "sim/backoff.h"
#include "sim/config.h"
#include "sim/control.h"
#include "sim/fd-budget.h"
#include "sim/worker-proto.h"
#include "sim/worker.h"

#define RESTART_DELAY_MIN_MS 1000
#define RESTART_DELAY_MAX_MS 60000

typedef struct Supervisor Supervisor;

typedef struct ReportPaths {
        const char *json, *junit, *html;
        const char *scenario;           /* --scenario FILE: read over the config */
        const char *shard;              /* --shard I/N: over the config's shard key */
} ReportPaths;

/* The config file, the scenario over it, then --shard over both: what the
 * daemon starts with and what SIGHUP re-reads. */
static int load_config(DaemonConfig *c, const char *path, const ReportPaths *cmdline, char *err, size_t errlen) {
        int r;

        r = daemon_config_load(c, path, err, errlen);
        if (r >= 0 && cmdline->scenario)
                r = daemon_config_load(c, cmdline->scenario, err, errlen);
        if (r >= 0 && cmdline->shard) {
                char *v = strdup(cmdline->shard);
                if (!v)
                        return -ENOMEM;
                free(c->shard);
                c->shard = v;
        }
        return r;
}

typedef struct WorkerSlot {
        Supervisor *sup;                /* not owned */
        unsigned index;
        size_t pos_first, count;
        pid_t pid;
        int fd;
        sd_event_source *io, *child, *restart_timer;
        WorkerReport last;
        Backoff restart_backoff;
        uint64_t started_usec;
        uint64_t last_report_usec;      /* CLOCK_MONOTONIC of the last report (or of the start) */
        int metrics_fd;                 /* the worker's metrics block: kept across its restarts */
        MetricsBlock *metrics;
        size_t metrics_size;
} WorkerSlot;

struct Supervisor {
        sd_event *event;
        DaemonConfig config;
        const char *config_path;
        WorkerSlot *workers;
        unsigned n_workers;
        size_t n_devices;
        bool ready_sent;
        bool stopping;
        sd_event_source *summary_timer, *kill_timer, *hang_timer;
        HttpServer *metrics_server;     /* metrics.listen */
        MetricsBlock *probe_block;      /* the probe's histograms (no devices) */
        Probe *probe;                   /* probe.enabled */
        Console *console;               /* a terminal: status line, workers' stderr through us */
        sd_event_source *sample_timer;  /* once a second: timeline, status line */
        Timeline timeline;
        uint64_t started_real_usec, started_mono_usec;
        const ReportPaths *reports;
        bool report_taken;              /* the final report is written */
        int config_fd;                  /* the effective config the workers read (WORKER_CONFIG_PATH) */
        sd_event_source *hold_timer, *storm_timer;      /* scenario.hold, scenario.storm */
        ReportCheck checks[SCENARIO_CHECKS_MAX];        /* scenario.pass_if, at the end */
        size_t n_checks;
        bool evaluated;
        Control *control;               /* the control socket (espfleet status) */
        ControlWorker *control_workers; /* what it sees of the workers */
};

static void apply_log_settings(const DaemonConfig *c) {
        int level = log_level_from_string(c->log_level);
        if (level >= 0)
                log_set_max_level(level);
        (void) log_set_debug_topics(c->debug_topics);
}

static int worker_spawn(WorkerSlot *w);
static int on_hold_done(sd_event_source *s, uint64_t usec, void *userdata);

static int on_worker_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        WorkerSlot *w = userdata;
        WorkerReport rep;
        ssize_t n;

        for (;;) {
                n = recv(fd, &rep, sizeof rep, MSG_DONTWAIT);
                if (n == (ssize_t) sizeof rep && rep.magic == WORKER_REPORT_MAGIC) {
                        w->last = rep;
                        (void) sd_event_now(w->sup->event, CLOCK_MONOTONIC, &w->last_report_usec);
                        continue;
                }
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        break;
                if (n <= 0) { /* EOF: the worker is going; SIGCHLD tells the rest */
                        w->io = sd_event_source_disable_unref(w->io);
                        break;
                }
        }
        Supervisor *sup = w->sup;
        if (!sup->ready_sent && !sup->stopping) {
                for (unsigned i = 0; i < sup->n_workers; i++)
                        if (!sup->workers[i].last.ramp_done || sup->workers[i].last.total != sup->workers[i].count)
                                return 0;
                uint32_t online = 0;
                for (unsigned i = 0; i < sup->n_workers; i++)
                        online += sup->workers[i].last.online;
                sup->ready_sent = true;
                log_info("Initial ramp done: %" PRIu32 "/%zu devices online", online, sup->n_devices);
                if (sup->config.scenario_hold_s > 0 &&
                    sd_event_add_time_relative(sup->event, &sup->hold_timer, CLOCK_MONOTONIC,
                                               (uint64_t) sup->config.scenario_hold_s * 1000000, 100000, on_hold_done,
                                               sup) >= 0) {
                        (void) sd_event_source_set_enabled(sup->hold_timer, SD_EVENT_ONESHOT);
                        log_info("Scenario: holding %u s", sup->config.scenario_hold_s);
                }
                (void) sd_notifyf(false, "READY=1\nSTATUS=%" PRIu32 "/%zu devices online", online, sup->n_devices);
        }
        return 0;
}

/* The supervisor's own loop is covered by the systemd watchdog; a worker
 * whose loop is stuck stops reporting (it reports every second), so it is
 * killed and the SIGCHLD path restarts it like a crashed one. */
static int on_hang_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        uint64_t limit = (uint64_t) sup->config.worker_watchdog_s * 1000000;

        for (unsigned i = 0; i < sup->n_workers && !sup->stopping; i++) {
                WorkerSlot *w = &sup->workers[i];
                if (w->pid <= 0 || usec < w->last_report_usec + limit)
                        continue;
                log_error("Worker %u (pid %d) sent no report for %u s: killing it", w->index, (int) w->pid,
                          sup->config.worker_watchdog_s);
                (void) kill(w->pid, SIGKILL);
                w->last_report_usec = usec; /* once: SIGCHLD follows */
        }
        (void) sd_event_source_set_time(s, usec + 1000000);
        return 0;
}

static int on_restart_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        WorkerSlot *w = userdata;

        if (w->sup->stopping)
                return 0;
        if (worker_spawn(w) < 0) {
                /* fork or socketpair failed (out of memory, of fds): try again later */
                uint64_t delay = backoff_next_ms(&w->restart_backoff, 0);
                log_error("Worker %u could not be started; trying again in %" PRIu64 " ms", w->index, delay);
                if (sd_event_source_set_time_relative(s, delay * 1000) >= 0)
                        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

static void check_all_exited(Supervisor *sup) {
        for (unsigned i = 0; i < sup->n_workers; i++)
                if (sup->workers[i].pid > 0)
                        return;
        log_info("All workers stopped");
        (void) sd_event_exit(sup->event, 0);
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        WorkerSlot *w = userdata;
        Supervisor *sup = w->sup;

        w->child = sd_event_source_disable_unref(w->child);
        w->io = sd_event_source_disable_unref(w->io);
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
        w->pid = 0;
        w->last.online = w->last.connecting = 0;
        if (sup->stopping) {
                check_all_exited(sup);
                return 0;
        }
        /* A worker that ran a while gets a fresh backoff. */
        uint64_t now;
        (void) sd_event_now(sup->event, CLOCK_MONOTONIC, &now);
        if (now - w->started_usec > 60 * 1000000ULL)
                backoff_reset(&w->restart_backoff);
        uint64_t delay = backoff_next_ms(&w->restart_backoff, 0);
        if (si->si_code == CLD_EXITED)
                log_error("Worker %u (pid %d) exited with status %d; restarting in %" PRIu64 " ms", w->index,
                          (int) si->si_pid, si->si_status, delay);
        else
                log_error("Worker %u (pid %d) died from signal %s; restarting in %" PRIu64 " ms", w->index,
                          (int) si->si_pid, strsignal(si->si_status), delay);
        if (w->restart_timer) {
                if (sd_event_source_set_time_relative(w->restart_timer, delay * 1000) >= 0)
                        (void) sd_event_source_set_enabled(w->restart_timer, SD_EVENT_ONESHOT);
        } else if (sd_event_add_time_relative(sup->event, &w->restart_timer, CLOCK_MONOTONIC, delay * 1000, 1000,
                                              on_restart_timer, w) >= 0)
                (void) sd_event_source_set_enabled(w->restart_timer, SD_EVENT_ONESHOT);
        return 0;
}

static int worker_spawn(WorkerSlot *w) {
        Supervisor *sup = w->sup;
        int sv[2], r;
        pid_t pid;

        if (w->restart_timer) /* kept: on_restart_timer() may be running, and re-arms it on failure */
                (void) sd_event_source_set_enabled(w->restart_timer, SD_EVENT_OFF);
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return log_error_errno(errno, "socketpair: %m");
        pid = fork();
        if (pid < 0) {
                close(sv[0]);
                close(sv[1]);
                return log_error_errno(errno, "fork: %m");
        }
        if (pid == 0) {
                char arg[128];
                sigset_t all;
                /* exec resets handlers, not the blocked mask */
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                /* first out of the way of 3..5 (any of them may be one of these), then into place */
                int from[] = { sv[1], w->metrics_fd, sup->config_fd };
                for (size_t k = 0; k < ELEMENTSOF(from); k++)
                        if ((from[k] = fcntl(from[k], F_DUPFD, 16)) < 0)
                                _exit(127);
                if (dup2(from[0], WORKER_FD) < 0 || dup2(from[1], WORKER_METRICS_FD) < 0 ||
                    dup2(from[2], WORKER_CONFIG_FD) < 0)
                        _exit(127);
                /* the console prints the workers' lines on a terminal: no time stamps there */
                if (sup->console && (dup2(console_worker_fd(sup->console), STDERR_FILENO) < 0 ||
                                     setenv("ESPFLEET_LOG_TIME", "0", 1) < 0))
                        _exit(127);
                snprintf(arg, sizeof arg, "%u:%u:%zu:%zu", w->index, sup->n_workers, w->pos_first, w->count);
                char *argv[] = { (char *) "espfleetd", (char *) "--worker", arg, (char *) "-c",
                                 (char *) WORKER_CONFIG_PATH, NULL };
                execv("/proc/self/exe", argv);
                _exit(127);
        }
        close(sv[1]);
        w->pid = pid;
        w->fd = sv[0];
        w->last = (WorkerReport) {};
        (void) sd_event_now(sup->event, CLOCK_MONOTONIC, &w->started_usec);
        w->last_report_usec = w->started_usec;
        r = sd_event_add_io(sup->event, &w->io, w->fd, EPOLLIN, on_worker_io, w);
        if (r >= 0)
                r = sd_event_add_child(sup->event, &w->child, pid, WEXITED, on_worker_exit, w);
        if (r < 0)
                return log_error_errno(r, "Cannot watch worker %u: %m", w->index);
        log_info("Worker %u started (pid %d): %zu devices", w->index, (int) pid, w->count);
        return 0;
}

/* The control socket's way to a worker: one datagram, never waiting. */
static int supervisor_send_command(void *owner, unsigned worker, const WorkerCommand *cmd) {
        Supervisor *sup = owner;
        WorkerSlot *w = &sup->workers[worker];

        if (sup->stopping)
                return -ESHUTDOWN;
        if (w->fd < 0)
                return -ENOTCONN;       /* being restarted */
        if (send(w->fd, cmd, sizeof *cmd, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

static int supervisor_start_control(Supervisor *sup) {
        char err[1024] = "";
        uint64_t now = 0;
        int r;

        sup->control_workers = calloc(sup->n_workers, sizeof(ControlWorker));
        if (!sup->control_workers)
                return log_error_errno(-ENOMEM, "Cannot set up the control socket: %m");
        for (unsigned i = 0; i < sup->n_workers; i++)
                sup->control_workers[i] = (ControlWorker) {
                        .metrics = sup->workers[i].metrics,
                        .pos_first = sup->workers[i].pos_first,
                        .count = sup->workers[i].count,
                };
        (void) sd_event_now(sup->event, CLOCK_REALTIME, &now);
        ControlContext ctx = {
                .workers = sup->control_workers,
                .n_workers = sup->n_workers,
                .started_usec = now,
                .owner = sup,
                .send_command = supervisor_send_command,
        };
        r = control_new(sup->event, sup->config.control_socket, &ctx, &sup->control, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "Refusing to start: %s", err);
        log_info("Control socket: %s", control_path(sup->control));
        return 0;
}

static void totals(Supervisor *sup, WorkerReport *t) {
        *t = (WorkerReport) {};
        for (unsigned i = 0; i < sup->n_workers; i++) {
                WorkerReport *r = &sup->workers[i].last;
                t->online += r->online;
                t->connecting += r->connecting;
                t->failed += r->failed;
                t->msgs_in += r->msgs_in;
                t->msgs_out += r->msgs_out;
        }
}

static int on_summary(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        WorkerReport t;

        totals(sup, &t);
        log_info("Fleet: online %" PRIu32 "/%zu, connecting %" PRIu32 ", failed %" PRIu32
                 ", messages in %" PRIu64 " out %" PRIu64,
                 t.online, sup->n_devices, t.connecting, t.failed, t.msgs_in, t.msgs_out);
        (void) sd_notifyf(false, "STATUS=%" PRIu32 "/%zu devices online, %" PRIu32 " connecting, %" PRIu32 " failed",
                          t.online, sup->n_devices, t.connecting, t.failed);
        (void) sd_event_source_set_time(s, usec + (uint64_t) MAX(sup->config.summary_interval_s, 1u) * 1000000);
        (void) sd_event_source_set_enabled(s, sup->config.summary_interval_s > 0 ? SD_EVENT_ON : SD_EVENT_OFF);
        return 0;
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;

        for (unsigned i = 0; i < sup->n_workers; i++)
                if (sup->workers[i].pid > 0) {
                        log_warning("Worker %u did not stop in time, killing it", i);
                        kill(sup->workers[i].pid, SIGKILL);
                }
        return 0;
}

/* Writes every report asked for; `reason` says what ended (or paused) the run. */
static void write_reports(Supervisor *sup, const char *reason) {
        _cleanup_free_ MetricsBlock **blocks = NULL;
        const ReportPaths *p = sup->reports;
        int r;

        if (!p || (!p->json && !p->junit && !p->html))
                return;
        blocks = calloc(sup->n_workers, sizeof *blocks);
        if (!blocks)
                return (void) log_oom();
        for (unsigned i = 0; i < sup->n_workers; i++)
                blocks[i] = sup->workers[i].metrics;
        ReportInput in = {
                .blocks = blocks,
                .n_blocks = sup->n_workers,
                .probe = sup->probe ? sup->probe_block : NULL,
                .config = &sup->config,
                .config_path = sup->config_path,
                .started_usec = sup->started_real_usec,
                .ended_usec = now_usec(CLOCK_REALTIME),
                .reason = reason,
                .timeline = &sup->timeline,
                .checks = sup->evaluated ? sup->checks : NULL,
                .n_checks = sup->evaluated ? sup->n_checks : 0,
        };
        json_object *report = report_build(&in);
        if (!report)
                return (void) log_oom();
        if (p->json) {
                r = report_write_json(p->json, report);
                if (r < 0)
                        log_error_errno(r, "Cannot write the report '%s': %m", p->json);
                else
                        log_info("Report written to %s", p->json);
        }
        if (p->junit) {
                r = report_write_junit(p->junit, report);
                if (r < 0)
                        log_error_errno(r, "Cannot write the JUnit report '%s': %m", p->junit);
                else
                        log_info("JUnit report written to %s", p->junit);
        }
        if (p->html) {
                r = report_write_html(p->html, report);
                if (r < 0)
                        log_error_errno(r, "Cannot write the HTML report '%s': %m", p->html);
                else
                        log_info("HTML report written to %s", p->html);
        }
        json_object_put(report);
}

static int on_usr1(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        write_reports(userdata, "SIGUSR1");
        return 0;
}

static void fleet_totals(Supervisor *sup, uint64_t *online, uint64_t *connects, uint64_t *failures,
                         uint64_t *ota_active, uint64_t *ota_queued, uint64_t *n_failed) {
        *online = *connects = *failures = *ota_active = *ota_queued = *n_failed = 0;
        for (unsigned i = 0; i < sup->n_workers; i++) {
                const MetricsBlock *b = sup->workers[i].metrics;
                if (!b)
                        continue;
                *online += b->devices_in_state[DEVICE_ONLINE];
                *n_failed += b->devices_in_state[DEVICE_FAILED] + b->devices_in_state[DEVICE_NO_CONNECT];
                *connects += b->counters[METRIC_CONNECTS];
                for (size_t k = 0; k < METRIC_REASON_SLOTS; k++)
                        *failures += b->connect_failures[k];
                *ota_active += b->downloads_active;
                *ota_queued += b->downloads_queued;
        }
}

/* The terminal's status line: the ramp, then OTA waves. */
static void update_status_line(Supervisor *sup, uint64_t online, uint64_t connects, uint64_t n_failed,
                               uint64_t ota_active, uint64_t ota_queued, uint64_t now) {
        char line[256], eta[16], rate[32] = "--/s";
        static uint64_t last_connects, last_usec;
        static double ewma;

        if (!sup->console)
                return;
        if (last_usec && now > last_usec) {
                double r = (double) (connects - MIN(last_connects, connects)) * 1e6 / (double) (now - last_usec);
                ewma = ewma > 0 ? 0.7 * ewma + 0.3 * r : r;
                snprintf(rate, sizeof rate, "%.0f/s", ewma);
        }
        last_connects = connects;
        last_usec = now;
        if (sup->stopping || (online + n_failed >= sup->n_devices && ota_active + ota_queued == 0)) {
                console_set_status(sup->console, NULL);
                return;
        }
        uint64_t left = sup->n_devices - MIN(online + n_failed, sup->n_devices);
        format_eta(eta, sizeof eta, ewma > 0.5 ? (double) left / ewma : -1);
        int n = snprintf(line, sizeof line, "online %" PRIu64 "/%zu (%.1f %%)  %s  ETA %s", online, sup->n_devices,
                         100.0 * (double) online / (double) MAX(sup->n_devices, (size_t) 1), rate, eta);
        if (n > 0 && (size_t) n < sizeof line && (ota_active || ota_queued))
                snprintf(line + n, sizeof line - (size_t) n, "  OTA %" PRIu64 " downloading, %" PRIu64 " queued",
                         ota_active, ota_queued);
        console_set_status(sup->console, line);
}

static int on_sample(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        uint64_t online, connects, failures, ota_active, ota_queued, n_failed;

        fleet_totals(sup, &online, &connects, &failures, &ota_active, &ota_queued, &n_failed);
        timeline_sample(&sup->timeline, online, connects, failures);
        update_status_line(sup, online, connects, n_failed, ota_active, ota_queued, usec);
        (void) sd_event_source_set_time(s, usec + 1000000);
        return 0;
}

/* scenario.pass_if against the fleet as it is now; logs every check. */
static void evaluate(Supervisor *sup) {
        _cleanup_free_ MetricsBlock *totals = metrics_totals_new();
        uint64_t online = 0;

        if (sup->evaluated || !totals)
                return;
        for (unsigned i = 0; i < sup->n_workers; i++)
                if (sup->workers[i].metrics) {
                        metrics_totals_add(totals, sup->workers[i].metrics);
                        online += sup->workers[i].metrics->devices_in_state[DEVICE_ONLINE];
                }
        sup->n_checks = scenario_evaluate(&sup->config, totals, sup->n_devices, online, sup->checks);
        sup->evaluated = true;
        for (size_t i = 0; i < sup->n_checks; i++)
                log_full_errno(sup->checks[i].passed ? LOG_INFO : LOG_WARNING, LOG_TOPIC_MAIN, NULL, 0,
                               "pass_if: %s: %g: %s", sup->checks[i].name, sup->checks[i].value,
                               sup->checks[i].passed ? "passed" : "FAILED");
}

/* The end of the run: verdict and reports with the states the devices
 * ended in (not "off"), then every device disconnects. */
static void supervisor_stop(Supervisor *sup, const char *reason) {
        if (sup->stopping)
                return;
        sup->stopping = true;
        evaluate(sup);
        write_reports(sup, reason);
        sup->report_taken = true;
        if (sup->console)
                console_set_status(sup->console, NULL);
        log_info("Stopping: devices disconnect (%s)", reason);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping: devices disconnect");
        for (unsigned i = 0; i < sup->n_workers; i++) {
                WorkerSlot *w = &sup->workers[i];
                w->restart_timer = sd_event_source_disable_unref(w->restart_timer);
                if (w->pid > 0)
                        kill(w->pid, SIGTERM);
        }
        if (sd_event_add_time_relative(sup->event, &sup->kill_timer, CLOCK_MONOTONIC, 20 * 1000000ULL, 100000,
                                       on_kill_timer, sup) >= 0)
                (void) sd_event_source_set_enabled(sup->kill_timer, SD_EVENT_ONESHOT);
        check_all_exited(sup);
}

static int on_term(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        supervisor_stop(userdata, si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        return 0;
}

static int on_hold_done(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;

        log_info("Scenario: held %u s after the ramp, stopping", sup->config.scenario_hold_s);
        supervisor_stop(sup, "hold");
        return 0;
}

/* scenario.storm: every worker drops every connection at once. */
static int on_storm(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        unsigned sent = 0;

        for (unsigned i = 0; i < sup->n_workers && !sup->stopping; i++) {
                WorkerCommand cmd = {
                        .magic = WORKER_COMMAND_MAGIC,
                        .type = WORKER_COMMAND_STORM,
                        .pos_first = sup->workers[i].pos_first,
                        .count = sup->workers[i].count,
                };
                if (supervisor_send_command(sup, i, &cmd) >= 0)
                        sent++;
        }
        log_info("Scenario: reconnect storm, every connection drops now (%u of %u workers)", sent, sup->n_workers);
        if (sup->config.storm_every_s > 0) {
                (void) sd_event_source_set_time(s, usec + (uint64_t) sup->config.storm_every_s * 1000000);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* The effective config into the memfd the workers read: a worker restarted
 * later reads what this one runs with, never a file edited since. */
static int config_fd_update(Supervisor *sup) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        r = daemon_config_format(&sup->config, f);
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0)
                return r;
        if (sup->config_fd < 0) {
                sup->config_fd = memfd_create("espfleetd-config", MFD_CLOEXEC);
                if (sup->config_fd < 0)
                        return -errno;
        }
        if (ftruncate(sup->config_fd, 0) < 0 || pwrite(sup->config_fd, text, len, 0) != (ssize_t) len)
                return -errno ?: -EIO;
        return 0;
}

static int on_hup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Supervisor *sup = userdata;
        DaemonConfig c;
        char err[1024];
        int r;

        /* Before the initial ramp is done, systemd still waits for the first
         * READY=1: a reload must not send it early. */
        if (sup->ready_sent)
                (void) sd_notify(false, "RELOADING=1");
        r = daemon_config_init(&c);
        if (r >= 0)
                r = load_config(&c, sup->config_path, sup->reports, err, sizeof err);
        if (r < 0) {
                log_error("Reload failed, keeping the running config: %s", r == -EINVAL ? err : strerror(-r));
                daemon_config_done(&c);
                if (sup->ready_sent)
                        (void) sd_notify(false, "READY=1");
                return 0;
        }
        const char *keys[16];
        size_t n_restart = daemon_config_changed(&sup->config, &c, false, keys, ELEMENTSOF(keys));
        for (size_t i = 0; i < MIN(n_restart, ELEMENTSOF(keys)); i++)
                log_warning("Config key '%s' changed: it takes effect after a daemon restart, ignoring", keys[i]);
        size_t n_live = daemon_config_changed(&sup->config, &c, true, keys, ELEMENTSOF(keys));
        char list[512] = "";
        for (size_t i = 0, l = 0; i < MIN(n_live, ELEMENTSOF(keys)) && l < sizeof list; i++)
                l += (size_t) snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", keys[i]);
        if (n_live > 0)
                log_info("Config reloaded from %s: %zu live key%s changed (%s%s)", sup->config_path, n_live,
                         n_live == 1 ? "" : "s", list, n_live > ELEMENTSOF(keys) ? ", …" : "");
        else
                log_info("Config reloaded from %s: no live key changed", sup->config_path);
        daemon_config_apply_live(&sup->config, &c);
        daemon_config_done(&c);
        apply_log_settings(&sup->config);
        if (sup->summary_timer)
                (void) sd_event_source_set_enabled(sup->summary_timer,
                                                   sup->config.summary_interval_s > 0 ? SD_EVENT_ON : SD_EVENT_OFF);
        r = config_fd_update(sup);
        if (r < 0)
                log_error_errno(r, "Cannot hand the reloaded config to the workers: %m; they keep the old one");
        else
                for (unsigned i = 0; i < sup->n_workers; i++)
                        if (sup->workers[i].pid > 0)
                                kill(sup->workers[i].pid, SIGHUP);
        if (sup->ready_sent)
                (void) sd_notify(false, "READY=1");
        return 0;
}

/* ---- Prometheus ------------------------------------------------------------ */

static int metrics_handler(const char *path, char **body, size_t *len, const char **type, void *userdata) {
        Supervisor *sup = userdata;
        const char *states[_DEVICE_STATE_MAX];
        _cleanup_free_ MetricsBlock **blocks = NULL;
        FILE *f;
        int r;

        if (streq(path, "/")) {
                *body = strdup("<html><body><h1>espfleetd</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n");
                if (!*body)
                        return -ENOMEM;
                *len = strlen(*body);
                *type = "text/html; charset=utf-8";
                return 0;
        }
        if (!streq(path, "/metrics"))
                return -ENOENT;
        blocks = calloc(sup->n_workers + 1, sizeof *blocks);
        if (!blocks)
                return -ENOMEM;
        for (unsigned i = 0; i < sup->n_workers; i++)
                blocks[i] = sup->workers[i].metrics;
        blocks[sup->n_workers] = sup->probe ? sup->probe_block : NULL; /* worker="probe" */
        for (DeviceState st = 0; st < _DEVICE_STATE_MAX; st++)
                states[st] = device_state_to_string(st);
        MetricsExport e = {
                .blocks = blocks,
                .n_blocks = sup->n_workers + 1,
                .probe_last = true,
                .state_names = states,
                .n_states = _DEVICE_STATE_MAX,
                .version = ESPFLEET_VERSION,
        };
        f = open_memstream(body, len);
        if (!f)
                return -ENOMEM;
        r = metrics_prometheus_write(f, &e);
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0) {
                free(*body);
                *body = NULL;
                return r;
        }
        *type = "text/plain; version=0.0.4; charset=utf-8";
        return 0;
}

static int metrics_server_start(Supervisor *sup) {
        char host[64];
        unsigned port;
        int r;

        if (!sup->config.metrics_listen || !*sup->config.metrics_listen)
                return 0;
        r = config_parse_listen(sup->config.metrics_listen, host, sizeof host, &port);
        if (r < 0)
                return log_error_errno(r, "metrics.listen '%s' is not ADDRESS:PORT", sup->config.metrics_listen);
        r = http_server_new(sup->event, host, port, metrics_handler, sup, &sup->metrics_server);
        if (r < 0)
                return log_error_errno(r, "Cannot serve metrics on %s: %m", sup->config.metrics_listen);
        log_info("Prometheus metrics on http://%s/metrics", sup->config.metrics_listen);
        return 0;
}

/* Raises the soft open-file limit to the hard one (workers inherit it) and
 * returns it: the fd budget of every worker (fd-budget.h). */
static unsigned raise_nofile(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 1024;
        if (rl.rlim_cur < rl.rlim_max) {
                struct rlimit want = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
                if (setrlimit(RLIMIT_NOFILE, &want) >= 0)
                        rl.rlim_cur = rl.rlim_max;
                else
                        log_warning_errno(errno, "Cannot raise the open-file limit from %llu to %llu: %m, ignoring",
                                          (unsigned long long) rl.rlim_cur, (unsigned long long) rl.rlim_max);
        }
        return rl.rlim_cur > UINT_MAX ? UINT_MAX : (unsigned) rl.rlim_cur;
}

/* The manifest positions of shard `c->shard` (fleet/shard.h): the slice of
 * indexes of a fleet of fleet.conf's fleet_size devices (recorded by
 * `provision --shard`), or of (highest index + 1) for a fleet provisioned
 * whole. Positions, since the manifest is sorted by index; a device
 * missing from the slice leaves it smaller, never takes a neighbour's. */
static int select_shard(const DaemonConfig *c, Fleet *fleet, size_t *ret_pos, size_t *ret_n, char *err,
                        size_t errlen) {
        size_t n_all = fleet_n_devices(fleet), pos = 0, end;
        unsigned total, first, count;
        Shard sh;

        if (shard_from_string(c->shard, &sh) < 0)
                return errf(err, errlen, -EINVAL, "shard '%s' is not I/N", c->shard);
        if (c->first_device != 0 || c->device_count != 0)
                return errf(err, errlen, -EINVAL, "shard = \"%s\" picks the devices; first_device and device_count "
                            "must stay 0", c->shard);
        total = fleet_config(fleet)->fleet_size;
        if (total == 0 && n_all > 0)
                total = fleet_device_entry(fleet, n_all - 1)->index + 1;
        shard_range(&sh, total, &first, &count);
        while (pos < n_all && fleet_device_entry(fleet, pos)->index < first)
                pos++;
        end = pos;
        while (end < n_all && fleet_device_entry(fleet, end)->index - first < count)
                end++;
        if (end == pos)
                return errf(err, errlen, -ENOENT, "shard %u/%u of a fleet of %u devices (indexes %u..%u) has no "
                            "device in '%s'", sh.index, sh.count, total, first, first + count - 1, c->fleet_dir);
        log_info("Shard %u/%u of a fleet of %u devices: indexes %u..%u, %zu of them in the fleet directory",
                 sh.index, sh.count, total, first, first + count - 1, end - pos);
        *ret_pos = pos;
        *ret_n = end - pos;
        return 0;
}

/* The fleet, and how many of its devices this daemon runs: the shard's
 * slice, or the manifest from first_device on, device_count of them (0:
 * all). A fleet that is not there, or that holds fewer devices than asked
 * for, is an error: a typo must not run a smaller test than the one planned. */
static int open_share(const DaemonConfig *c, Fleet **ret_fleet, size_t *ret_pos, size_t *ret_n, char *err,
                      size_t errlen) {
        _cleanup_(fleet_freep) Fleet *fleet = NULL;
        size_t n_all, pos = 0, n = 0;
        int r;

        r = fleet_open(c->fleet_dir, &fleet, err, errlen);
        if (r < 0)
                return r;
        if (c->shard && *c->shard) {
                r = select_shard(c, fleet, &pos, &n, err, errlen);
                if (r < 0)
                        return r;
        } else {
                n_all = fleet_n_devices(fleet);
                while (pos < n_all && fleet_device_entry(fleet, pos)->index < c->first_device)
                        pos++;
                n = n_all - pos;
                if (n == 0)
                        return errf(err, errlen, -ENOENT, "fleet '%s' has no device from index %u on (it holds %zu)",
                                    c->fleet_dir, c->first_device, n_all);
                if (c->device_count > n)
                        return errf(err, errlen, -ERANGE,
                                    "device_count = %u, but fleet '%s' holds only %zu device%s from index %u on",
                                    c->device_count, c->fleet_dir, n, n == 1 ? "" : "s", c->first_device);
                if (c->device_count > 0)
                        n = c->device_count;
        }
        *ret_pos = pos;
        *ret_n = n;
        if (ret_fleet)
                *ret_fleet = TAKE_PTR(fleet);
        return 0;
}

static int run_supervisor(const char *config_path, const ReportPaths *reports) {
        Supervisor sup = { .config_path = config_path, .reports = reports, .config_fd = -1 };
        _cleanup_(fleet_freep) Fleet *fleet = NULL;
        char err[1024] = "";
        int r;

        r = daemon_config_init(&sup.config);
        if (r < 0)
                return r;
        r = load_config(&sup.config, config_path, reports, err, sizeof err);
        if (r < 0) {
                log_error("Refusing to start: %s", r == -EINVAL ? err : strerror(-r));
                goto out;
        }
        apply_log_settings(&sup.config);
        size_t pos, n;
        r = open_share(&sup.config, &fleet, &pos, &n, err, sizeof err);
        if (r < 0) {
                log_error("Refusing to start: %s", err);
                goto out;
        }
        sup.n_devices = n;
        unsigned nofile = raise_nofile();
        r = daemon_config_workers_for(&sup.config, (unsigned) n, nofile, err, sizeof err);
        if (r < 0) {
                log_error("Refusing to start: %s: %s", config_path, err);
                goto out;
        }
        sup.n_workers = (unsigned) r;
        log_info("Open-file limit %u per process: up to %u devices per worker (%u fd each, %u downloads of %u fds, "
                 "%u reserved)", nofile, fd_budget_devices(nofile, sup.config.ota_max_concurrent), FDS_PER_DEVICE,
                 sup.config.ota_max_concurrent, FDS_PER_DOWNLOAD, FD_RESERVED_PER_WORKER);
        fleet = fleet_free(fleet);

        r = sd_event_default(&sup.event);
        if (r < 0)
                goto out;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGUSR1);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(sup.event, NULL, SIGUSR1, on_usr1, &sup);
        (void) sd_event_add_signal(sup.event, NULL, SIGTERM, on_term, &sup);
        (void) sd_event_add_signal(sup.event, NULL, SIGINT, on_term, &sup);
        (void) sd_event_add_signal(sup.event, NULL, SIGHUP, on_hup, &sup);
        (void) sd_event_set_watchdog(sup.event, true);

        sup.workers = calloc(sup.n_workers, sizeof(WorkerSlot));
        if (!sup.workers) {
                r = -ENOMEM;
                goto out;
        }
        sup.config_fd = -1;
        r = config_fd_update(&sup);
        if (r < 0) {
                log_error_errno(r, "Cannot hand the config to the workers: %m");
                goto out;
        }
        timeline_init(&sup.timeline);
        sup.started_real_usec = now_usec(CLOCK_REALTIME);
        if (console_wanted()) {
                r = console_new(sup.event, &sup.console);
                if (r < 0)
                        log_warning_errno(r, "No status line on this terminal: %m, ignoring");
        }
        if (sup.config.probe_enabled) {
                sup.probe_block = metrics_totals_new();
                if (!sup.probe_block) {
                        r = log_oom();
                        goto out_workers;
                }
                r = probe_new(sup.event, &sup.config, sup.probe_block, &sup.probe, err, sizeof err);
                if (r < 0) {
                        log_error("Refusing to start: %s", *err ? err : strerror(-r));
                        goto out_workers;
                }
        }
        size_t n_hosts = 0;
        while (sup.config.broker_hosts && sup.config.broker_hosts[n_hosts])
                n_hosts++;
        if (n_hosts > 0)
                log_info("espfleetd: %zu devices (manifest positions %zu..%zu), %u worker(s), %zu brokers (%s, …)",
                         n, pos, pos + n - 1, sup.n_workers, n_hosts, sup.config.broker_hosts[0]);
        else
                log_info("espfleetd: %zu devices (manifest positions %zu..%zu), %u worker(s), broker %s:%u", n, pos,
                         pos + n - 1, sup.n_workers, sup.config.broker_host, sup.config.broker_port);
        for (unsigned i = 0; i < sup.n_workers; i++) {
                WorkerSlot *w = &sup.workers[i];
                w->sup = &sup;
                w->index = i;
                w->fd = -1;
                w->metrics_fd = -1;
                w->pos_first = pos + n * i / sup.n_workers;
                w->count = pos + n * (i + 1) / sup.n_workers - w->pos_first;
                backoff_init(&w->restart_backoff, RESTART_DELAY_MIN_MS, RESTART_DELAY_MAX_MS, 0);
                r = metrics_block_create(i, w->count, &w->metrics_fd, &w->metrics);
                if (r < 0) {
                        log_error_errno(r, "Cannot create the metrics block of worker %u: %m", i);
                        goto out_workers;
                }
                w->metrics_size = metrics_block_size(w->count);
                r = worker_spawn(w);
                if (r < 0)
                        goto out_workers;
        }
        r = metrics_server_start(&sup);
        if (r < 0)
                goto out_workers;
        if (sd_event_add_time_relative(sup.event, &sup.sample_timer, CLOCK_MONOTONIC, 1000000, 50000, on_sample,
                                       &sup) >= 0)
                (void) sd_event_source_set_enabled(sup.sample_timer, SD_EVENT_ON);
        if (sup.config.storm_at_s > 0 &&
            sd_event_add_time_relative(sup.event, &sup.storm_timer, CLOCK_MONOTONIC,
                                       (uint64_t) sup.config.storm_at_s * 1000000, 10000, on_storm, &sup) >= 0)
                (void) sd_event_source_set_enabled(sup.storm_timer, SD_EVENT_ONESHOT);
        r = supervisor_start_control(&sup);
        if (r < 0)
                goto out_workers;
        if (sd_event_add_time_relative(sup.event, &sup.summary_timer, CLOCK_MONOTONIC,
                                       (uint64_t) MAX(sup.config.summary_interval_s, 1u) * 1000000, 100000, on_summary,
                                       &sup) >= 0)
                (void) sd_event_source_set_enabled(sup.summary_timer,
                                                   sup.config.summary_interval_s > 0 ? SD_EVENT_ON : SD_EVENT_OFF);
        if (sd_event_add_time_relative(sup.event, &sup.hang_timer, CLOCK_MONOTONIC, 1000000, 100000, on_hang_check,
                                       &sup) >= 0)
                (void) sd_event_source_set_enabled(sup.hang_timer, SD_EVENT_ON);
        (void) sd_notifyf(false, "STATUS=Starting %zu devices", n);
        r = sd_event_loop(sup.event);
        if (!sup.report_taken) {
                evaluate(&sup);
                write_reports(&sup, "exit");
        }
        if (r >= 0 && !scenario_passed(sup.checks, sup.n_checks)) {
                log_warning("pass_if: the run failed its thresholds (exit status %d)", SCENARIO_EXIT_FAILED);
                r = SCENARIO_EXIT_FAILED;
        }
        if (r == 0) {
                WorkerReport t;
                totals(&sup, &t);
                log_info("Stopped: messages in %" PRIu64 " out %" PRIu64, t.msgs_in, t.msgs_out);
        }

out_workers:
        sup.control = control_free(sup.control);        /* before the metrics blocks it reads */
        free(sup.control_workers);
        for (unsigned i = 0; sup.workers && i < sup.n_workers; i++) {
                WorkerSlot *w = &sup.workers[i];
                if (w->pid > 0) {
                        kill(w->pid, SIGTERM);
                        (void) waitpid(w->pid, NULL, 0);
                }
                sd_event_source_disable_unref(w->io);
                sd_event_source_disable_unref(w->child);
                sd_event_source_disable_unref(w->restart_timer);
                if (w->fd >= 0)
                        close(w->fd);
                metrics_block_unmap(w->metrics, w->metrics_size);
                if (w->metrics_fd >= 0)
                        close(w->metrics_fd);
        }
        free(sup.workers);
        http_server_free(sup.metrics_server);
        probe_free(sup.probe);
        free(sup.probe_block);
        sd_event_source_disable_unref(sup.sample_timer);
        sd_event_source_disable_unref(sup.hold_timer);
        sd_event_source_disable_unref(sup.storm_timer);
        sup.console = console_free(sup.console);
        sd_event_source_disable_unref(sup.summary_timer);
        sd_event_source_disable_unref(sup.kill_timer);
        sd_event_source_disable_unref(sup.hang_timer);
        sd_event_unref(sup.event);
out:
        if (sup.config_fd >= 0)
                close(sup.config_fd);
        daemon_config_done(&sup.config);
        return r;
}

static void help(void) {
        printf("espfleetd [-c FILE]      run the fleet described by FILE (libconfig; default " ESPFLEET_CONFIG_FILE ")\n"
               "espfleetd -c FILE --check-config   parse FILE and exit\n"
               "espfleetd --dump-config  print every key at its default (etc/espfleet.conf)\n"
               "\nReports, written when the run stops and on SIGUSR1:\n"
               "  --report FILE.json       metadata, percentiles, counters, a table of every device\n"
               "  --junit FILE.xml         one testcase per device: offline, failed OTA or rollback fail\n"
               "  --report-html FILE       one self-contained page with charts\n"
               "\n  --scenario FILE          a load test as a file: its keys (scenario = { … }, ramp, telemetry, …)\n"
               "                           are read over the config's\n"
               "  --shard I/N              run only the I-th of N equal slices of the fleet (the shard key)\n"
               "\nExit status: 0; 1 on an error; 3 when scenario.pass_if thresholds failed.\n");
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'C' },
                { "dump-config", no_argument, NULL, 'D' },
                { "worker", required_argument, NULL, 'W' },
                { "report", required_argument, NULL, 'R' },
                { "junit", required_argument, NULL, 'J' },
                { "report-html", required_argument, NULL, 'H' },
                { "scenario", required_argument, NULL, 'S' },
                { "shard", required_argument, NULL, 'X' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *config_path = ESPFLEET_CONFIG_FILE, *worker = NULL;
        ReportPaths reports = {};
        bool check = false;
        int c;

        log_set_program("espfleetd");
        /* a log file or a pipe gets time stamps; a terminal and journald do not need them */
        log_set_timestamps(!isatty(STDERR_FILENO));
        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'C':
                        check = true;
                        break;
                case 'D':
                        return daemon_config_dump_sample(stdout) < 0 ? 1 : 0;
                case 'W':
                        worker = optarg;
                        break;
                case 'R':
                        reports.json = optarg;
                        break;
                case 'J':
                        reports.junit = optarg;
                        break;
                case 'H':
                        reports.html = optarg;
                        break;
                case 'S':
                        reports.scenario = optarg;
                        break;
                case 'X': {
                        Shard sh;
                        if (shard_from_string(optarg, &sh) < 0) {
                                log_error("--shard '%s' is not I/N with 0 <= I < N <= %u", optarg, SHARD_COUNT_MAX);
                                return 2;
                        }
                        reports.shard = optarg;
                        break;
                }
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        if (optind < argc) {
                log_error("Unexpected argument '%s'", argv[optind]);
                return 2;
        }
        if (check) {
                DaemonConfig cfg;
                char err[1024];
                int r = daemon_config_init(&cfg);
                size_t pos, n = 0;
                if (r >= 0)
                        r = load_config(&cfg, config_path, &reports, err, sizeof err);
                if (r < 0)
                        log_error("%s", r == -EINVAL ? err : strerror(-r));
                else {
                        /* the config also names a fleet: check that it is there */
                        r = open_share(&cfg, NULL, &pos, &n, err, sizeof err);
                        if (r < 0)
                                log_error("%s: %s", config_path, err);
                        else
                                printf("%s: OK (%zu device%s of %s)\n", config_path, n, n == 1 ? "" : "s",
                                       cfg.fleet_dir);
                }
                daemon_config_done(&cfg);
                return r < 0 ? 1 : 0;
        }
        if (worker) {
                unsigned idx, n;
                size_t first, count;
                if (sscanf(worker, "%u:%u:%zu:%zu", &idx, &n, &first, &count) != 4) {
                        log_error("Bad --worker argument '%s'", worker);
                        return 2;
                }
                (void) raise_nofile();
                return worker_run(config_path, idx, n, first, count) < 0 ? 1 : 0;
        }
        int r = run_supervisor(config_path, &reports);
        return r < 0 ? 1 : r;
}
