/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <errno.h>
#include <syslog.h>

#include "basic/log.h"
#include "metrics/metrics.h"
#include "sim/manager.h"
#include "sim/worker-proto.h"
#include "sim/worker.h"

typedef struct Worker {
        sd_event *event;
        MetricsBlock *metrics;          /* shared with the main process; NULL when run without one */
        size_t metrics_size;
        Manager *manager;
        const char *config_path;
        unsigned index;
        sd_event_source *report_timer;
} Worker;

static void worker_send_report(Worker *w) {
        ManagerStats s;
        WorkerReport rep = { .magic = WORKER_REPORT_MAGIC };

        manager_get_stats(w->manager, &s);
        manager_update_gauges(w->manager);
        if (w->metrics) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                w->metrics->heartbeat_usec = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
        }
        rep.total = s.total;
        rep.online = s.online;
        rep.connecting = s.connecting;
        rep.failed = s.failed;
        rep.msgs_in = s.msgs_in;
        rep.msgs_out = s.msgs_out;
        rep.ramp_done = s.ramp_done;
        rep.stopped = s.stopped;
        (void) send(WORKER_FD, &rep, sizeof rep, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static int report_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        worker_send_report(w);
        (void) sd_event_source_set_time(s, usec + 1000000);
        return 0;
}

static void stopped(Manager *m, void *userdata) {
        Worker *w = userdata;

        worker_send_report(w);
        log_info("Worker %u: all devices disconnected", w->index);
        (void) sd_event_exit(w->event, 0);
}

static int on_term(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Worker *w = userdata;

        log_info("Worker %u: stopping (%s)", w->index, strsignal((int) si->ssi_signo));
        manager_stop(w->manager, stopped, w);
        return 0;
}

static void apply_log_settings(const DaemonConfig *c) {
        int level = log_level_from_string(c->log_level);
        if (level >= 0)
                log_set_max_level(level);
        (void) log_set_debug_topics(c->debug_topics);
}

static int on_hup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Worker *w = userdata;
        DaemonConfig c;
        char err[1024];
        int r;

        r = daemon_config_init(&c);
        if (r < 0)
                return 0;
        r = daemon_config_load(&c, w->config_path, err, sizeof err);
        if (r < 0)
                log_error("Worker %u: reload failed, keeping the running config: %s", w->index, err);
        else {
                apply_log_settings(&c);
                manager_reload(w->manager, &c);
        }
        daemon_config_done(&c);
        return 0;
}

static int on_parent(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Worker *w = userdata;
        WorkerCommand cmd;
        ssize_t n;

        for (;;) {
                n = recv(fd, &cmd, sizeof cmd, MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return 0;
                if (n <= 0)
                        break;
                if (n != (ssize_t) sizeof cmd || cmd.magic != WORKER_COMMAND_MAGIC || cmd.type >= _WORKER_COMMAND_MAX) {
                        log_warning("Worker %u: a malformed command from the main process (%zd bytes), ignoring",
                                    w->index, n);
                        continue;
                }
                cmd.url[sizeof cmd.url - 1] = 0;
                size_t k = manager_command(w->manager, (WorkerCommandType) cmd.type, (size_t) cmd.pos_first,
                                           (size_t) cmd.count, cmd.url);
                log_debug("Worker %u: command %u reached %zu device(s)", w->index, cmd.type, k);
        }
        log_warning("Worker %u: the main process is gone, stopping", w->index);
        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        manager_stop(w->manager, stopped, w);
        return 0;
}

int worker_run(const char *config_path, unsigned index, unsigned n_workers, size_t pos_first, size_t count) {
        Worker w = { .config_path = config_path, .index = index };
        _cleanup_(fleet_freep) Fleet *fleet = NULL;
        DaemonConfig c;
        char err[1024] = "", name[64];
        int lock_fd = -1, r;

        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        snprintf(name, sizeof name, "espfleetd[worker %u]", index);
        log_set_program(strdup(name) ?: "espfleetd");

        r = daemon_config_init(&c);
        if (r < 0)
                return r;
        r = daemon_config_load(&c, config_path, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                goto out_config;
        }
        apply_log_settings(&c);
        r = fleet_open(c.fleet_dir, &fleet, err, sizeof err);
        if (r < 0) {
                log_error("Cannot open fleet: %s", err);
                goto out_config;
        }
        if (count > 0) {
                const FleetDeviceEntry *a = fleet_device_entry(fleet, pos_first);
                const FleetDeviceEntry *b = fleet_device_entry(fleet, pos_first + count - 1);
                if (!a || !b) {
                        log_error("Worker %u: devices %zu..%zu are not in the manifest", index, pos_first,
                                  pos_first + count - 1);
                        r = -ENOENT;
                        goto out_config;
                }
                r = fleet_lock_devices(fleet, a->index, b->index - a->index + 1, &lock_fd, err, sizeof err);
                if (r < 0) {
                        log_error("Worker %u: %s", index, err);
                        goto out_config;
                }
        }

        if (fcntl(WORKER_METRICS_FD, F_GETFD) >= 0) {
                r = metrics_block_map(WORKER_METRICS_FD, &w.metrics, &w.metrics_size);
                if (r >= 0 && (w.metrics->worker != index || w.metrics->n_devices != count))
                        r = -EBADMSG;
                if (r < 0) {
                        log_error_errno(r, "Worker %u: the metrics block is not ours: %m", index);
                        goto out_lock;
                }
                (void) close(WORKER_METRICS_FD);
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                if (!w.metrics->started_usec)
                        w.metrics->started_usec = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
                w.metrics->worker_starts++;
        }

        r = sd_event_new(&w.event);
        if (r < 0)
                goto out_lock;
        r = manager_new(w.event, &c, fleet, pos_first, count, n_workers, w.metrics, &w.manager, err, sizeof err);
        if (r < 0) {
                log_error("Worker %u: %s", index, err);
                goto out_event;
        }
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(w.event, NULL, SIGTERM, on_term, &w);
        (void) sd_event_add_signal(w.event, NULL, SIGINT, on_term, &w);
        (void) sd_event_add_signal(w.event, NULL, SIGHUP, on_hup, &w);
        (void) sd_event_add_io(w.event, NULL, WORKER_FD, EPOLLIN, on_parent, &w);
        r = sd_event_add_time_relative(w.event, &w.report_timer, CLOCK_MONOTONIC, 200000, 10000, report_handler, &w);
        if (r >= 0)
                r = sd_event_source_set_enabled(w.report_timer, SD_EVENT_ON);
        if (r >= 0)
                r = manager_start(w.manager);
        if (r < 0) {
                log_error_errno(r, "Worker %u: cannot start: %m", index);
                goto out_manager;
        }
        log_info("Worker %u: running %zu devices (manifest positions %zu..%zu)", index, count, pos_first,
                 pos_first + count - 1);
        r = sd_event_loop(w.event);

out_manager:
        w.report_timer = sd_event_source_disable_unref(w.report_timer);
        w.manager = manager_free(w.manager);
out_event:
        w.event = sd_event_unref(w.event);
out_lock:
        metrics_block_unmap(w.metrics, w.metrics_size);
        if (lock_fd >= 0) {
                const FleetDeviceEntry *a = fleet_device_entry(fleet, pos_first);
                fleet_unlock_devices(fleet, a ? a->index : 0, lock_fd);
        }
out_config:
        daemon_config_done(&c);
        return r;
}
