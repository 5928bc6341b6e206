/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-journal.h>

#include "basic/log.h"
#include "basic/string-table.h"

static const char *const log_topic_table[_LOG_TOPIC_MAX] = {
        [LOG_TOPIC_MAIN] = "main",
        [LOG_TOPIC_SIM] = "sim",
        [LOG_TOPIC_MQTT] = "mqtt",
        [LOG_TOPIC_HTTP] = "http",
        [LOG_TOPIC_OTA] = "ota",
        [LOG_TOPIC_NVS] = "nvs",
        [LOG_TOPIC_FLASH] = "flash",
        [LOG_TOPIC_DSEMU] = "dsemu",
        [LOG_TOPIC_IMAGE] = "image",
};
DEFINE_STRING_TABLE_LOOKUP(log_topic, LogTopic);

static LogTarget log_target = LOG_TARGET_AUTO;
static int log_target_resolved = -1; /* LOG_TARGET_STDERR or LOG_TARGET_JOURNAL */
static int log_max_level = LOG_INFO;
static unsigned log_debug_mask;
static const char *log_program = "espfleet";
static int log_env_read;

void log_set_target(LogTarget t) {
        log_target = t;
        log_target_resolved = -1;
}

static void (*stderr_hook)(bool before, void *userdata);
static void *stderr_hook_userdata;

void log_set_stderr_hook(void (*hook)(bool before, void *userdata), void *userdata) {
        stderr_hook = hook;
        stderr_hook_userdata = userdata;
}

void log_set_max_level(int level) {
        log_max_level = level;
}

void log_set_program(const char *name) {
        log_program = name;
}

int log_set_debug_topics(const char *csv) {
        unsigned mask = 0;

        if (!csv || !*csv) {
                log_debug_mask = 0;
                return 0;
        }
        const char *p = csv;
        while (*p) {
                size_t n = strcspn(p, ", ");
                char word[32];
                if (n > 0) {
                        if (n >= sizeof word)
                                return -EINVAL;
                        memcpy(word, p, n);
                        word[n] = 0;
                        if (streq(word, "all"))
                                mask = ~0u;
                        else {
                                LogTopic t = log_topic_from_string(word);
                                if (t < 0)
                                        return -EINVAL;
                                mask |= 1u << t;
                        }
                }
                p += n;
                p += strspn(p, ", ");
        }
        log_debug_mask = mask;
        return 0;
}

/* Off by default (a CLI's messages); a daemon turns them on for a stderr
 * that is no terminal. ESPFLEET_LOG_TIME=0|1 wins over both: a supervisor
 * that shows its workers' lines on a terminal passes 0 to them. */
static bool log_timestamps = false;

void log_set_timestamps(bool b) {
        log_timestamps = b;
}

static void log_read_env(void) {
        if (log_env_read)
                return;
        log_env_read = 1;
        const char *e = getenv("ESPFLEET_DEBUG");
        if (e)
                (void) log_set_debug_topics(e);
        e = getenv("ESPFLEET_LOG_TIME");
        if (e && (streq(e, "0") || streq(e, "1")))
                log_timestamps = streq(e, "1");
}

/* netlogd-style automatic target: journald's stream sets $JOURNAL_STREAM to
 * "dev:ino" of the stderr socket. */
static int log_resolve_target(void) {
        if (log_target_resolved >= 0)
                return log_target_resolved;
        if (log_target != LOG_TARGET_AUTO)
                return (log_target_resolved = log_target);

        const char *js = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;
        if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) >= 0 &&
            (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino)
                return (log_target_resolved = LOG_TARGET_JOURNAL);
        return (log_target_resolved = LOG_TARGET_STDERR);
}

bool log_would_log(int level, LogTopic topic) {
        log_read_env();
        if (level <= log_max_level)
                return true;
        return level == LOG_DEBUG && topic >= 0 && topic < _LOG_TOPIC_MAX && (log_debug_mask & (1u << topic));
}

int log_internal(int level, LogTopic topic, const char *device_id, int error,
                 const char *file, int line, const char *func,
                 const char *fmt, ...) {
        int saved_errno = errno;
        int ret = error > 0 ? -error : error;

        if (!log_would_log(level, topic)) {
                errno = saved_errno;
                return ret;
        }

        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        errno = error > 0 ? error : -error; /* so %m works */
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        if (log_resolve_target() == LOG_TARGET_JOURNAL) {
                char code_file[256], code_line[32];
                snprintf(code_file, sizeof code_file, "CODE_FILE=%s", file);
                snprintf(code_line, sizeof code_line, "CODE_LINE=%d", line);
                char errno_field[32] = "";
                if (error != 0)
                        snprintf(errno_field, sizeof errno_field, "ERRNO=%i", abs(error));
                if (device_id)
                        sd_journal_send_with_location(code_file, code_line, func,
                                                      "MESSAGE=%s", msg,
                                                      "PRIORITY=%i", level,
                                                      "SYSLOG_IDENTIFIER=%s", log_program,
                                                      "ESPFLEET_TOPIC=%s", strna(log_topic_to_string(topic)),
                                                      "DEVICE_ID=%s", device_id,
                                                      error != 0 ? "%s" : NULL, errno_field,
                                                      NULL);
                else
                        sd_journal_send_with_location(code_file, code_line, func,
                                                      "MESSAGE=%s", msg,
                                                      "PRIORITY=%i", level,
                                                      "SYSLOG_IDENTIFIER=%s", log_program,
                                                      "ESPFLEET_TOPIC=%s", strna(log_topic_to_string(topic)),
                                                      error != 0 ? "%s" : NULL, errno_field,
                                                      NULL);
        } else {
                static const char *const prefixes[] = {
                        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
                        [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
                };
                const char *pfx = level >= 0 && level < (int) ELEMENTSOF(prefixes) ? prefixes[level] : "log";
                if (stderr_hook)
                        stderr_hook(true, stderr_hook_userdata);
                /* journald stamps its entries; a file or a pipe gets the time here,
                 * as ISO 8601 UTC with milliseconds */
                char stamp[64] = "";
                if (log_timestamps) {
                        struct timespec ts;
                        struct tm tm;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        if (gmtime_r(&ts.tv_sec, &tm))
                                snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
                                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                                         tm.tm_sec, ts.tv_nsec / 1000000);
                }
                if (device_id)
                        fprintf(stderr, "%s%s[%d]: %s: %s: %s\n", stamp, log_program, (int) getpid(), pfx, device_id, msg);
                else
                        fprintf(stderr, "%s%s[%d]: %s: %s\n", stamp, log_program, (int) getpid(), pfx, msg);
                if (stderr_hook)
                        stderr_hook(false, stderr_hook_userdata);
        }
        errno = saved_errno;
        return ret;
}
