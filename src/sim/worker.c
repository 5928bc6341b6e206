/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_SIM

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <syslog.h>

#include "basic/log.h"
#include "sim/manager.h"
#include "sim/worker-proto.h"
#include "sim/worker.h"

typedef struct Worker {
        sd_event *event;
        Manager *manager;
        const char *config_path;
        unsigned index;
        sd_event_source *report_timer;
} Worker;

static void worker_send_report(Worker *w) {
        ManagerStats s;
        WorkerReport rep = { .magic = WORKER_REPORT_MAGIC };

        manager_get_stats(w->manager, &s);
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
        char buf[64];

        if (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
                return 0;
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

        r = sd_event_new(&w.event);
        if (r < 0)
                goto out_lock;
        r = manager_new(w.event, &c, fleet, pos_first, count, n_workers, &w.manager, err, sizeof err);
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
        if (lock_fd >= 0) {
                const FleetDeviceEntry *a = fleet_device_entry(fleet, pos_first);
                fleet_unlock_devices(fleet, a ? a->index : 0, lock_fd);
        }
out_config:
        daemon_config_done(&c);
        return r;
}
