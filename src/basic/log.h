/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

#include "basic/macro.h"

/* Per-module log topics (PipeWire style). Each can be raised to debug on its
 * own: ESPFLEET_DEBUG=nvs,ota or log_set_debug_topics("nvs,ota"). */
typedef enum LogTopic {
        LOG_TOPIC_MAIN,   /* daemon and CLI top level */
        LOG_TOPIC_SIM,    /* fleet manager, device state machine */
        LOG_TOPIC_MQTT,   /* libmosquitto glue */
        LOG_TOPIC_HTTP,   /* libcurl glue */
        LOG_TOPIC_OTA,    /* download, verify, boot */
        LOG_TOPIC_NVS,    /* NVS storage */
        LOG_TOPIC_FLASH,  /* flash image, partition table, otadata */
        LOG_TOPIC_DSEMU,  /* eFuse, HMAC, DS */
        LOG_TOPIC_IMAGE,  /* app images, secure boot signatures */
        _LOG_TOPIC_MAX,
        _LOG_TOPIC_INVALID = -EINVAL,
} LogTopic;

const char *log_topic_to_string(LogTopic t) _pure_;
LogTopic log_topic_from_string(const char *s) _pure_;

typedef enum LogTarget {
        LOG_TARGET_AUTO,     /* journal when stderr is connected to it, else stderr */
        LOG_TARGET_STDERR,
        LOG_TARGET_JOURNAL,
        _LOG_TARGET_MAX,
        _LOG_TARGET_INVALID = -EINVAL,
} LogTarget;

/* Global settings; call once at start-up (and again on SIGHUP). */
void log_set_target(LogTarget t);
void log_set_max_level(int level);             /* LOG_ERR … LOG_DEBUG; default LOG_INFO */
/* Called around every line written to stderr (not to the journal): a
 * status line at the bottom of a terminal clears itself before and draws
 * itself again after. NULL removes it. */
void log_set_stderr_hook(void (*hook)(bool before, void *userdata), void *userdata);
int log_set_debug_topics(const char *csv);     /* "nvs,ota" or "all"; -EINVAL names nothing */
/* A UTC time stamp before each stderr line (journald has its own). Default
 * off; ESPFLEET_LOG_TIME=0|1 overrides the default and this call. */
void log_set_timestamps(bool b);
void log_set_program(const char *name);        /* prefix on stderr, SYSLOG_IDENTIFIER in journal */
bool log_would_log(int level, LogTopic topic);

/* Logs one line. `device_id` may be NULL; when set it becomes DEVICE_ID= in
 * the journal and a "esp-xxxxxx: " prefix on stderr. Returns -abs(error) when
 * error != 0, else 0, so callers can `return log_error_errno(r, …)`. */
int log_internal(int level, LogTopic topic, const char *device_id, int error,
                 const char *file, int line, const char *func,
                 const char *fmt, ...) _printf_(8, 9);

#define log_full_errno(level, topic, dev, error, ...) \
        log_internal(level, topic, dev, error, __FILE__, __LINE__, __func__, __VA_ARGS__)

#ifndef LOG_TOPIC
#define LOG_TOPIC LOG_TOPIC_MAIN
#endif

#define log_debug(...)   log_full_errno(LOG_DEBUG, LOG_TOPIC, NULL, 0, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, LOG_TOPIC, NULL, 0, __VA_ARGS__)
#define log_notice(...)  log_full_errno(LOG_NOTICE, LOG_TOPIC, NULL, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, LOG_TOPIC, NULL, 0, __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, LOG_TOPIC, NULL, 0, __VA_ARGS__)
#define log_oom()        log_full_errno(LOG_ERR, LOG_TOPIC, NULL, -ENOMEM, "Out of memory")   /* -ENOMEM */
#define log_debug_errno(e, ...)   log_full_errno(LOG_DEBUG, LOG_TOPIC, NULL, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, LOG_TOPIC, NULL, e, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, LOG_TOPIC, NULL, e, __VA_ARGS__)

/* Per-device variants: DEVICE_ID= field in the journal. */
#define log_dev_debug(dev, ...)   log_full_errno(LOG_DEBUG, LOG_TOPIC, dev, 0, __VA_ARGS__)
#define log_dev_info(dev, ...)    log_full_errno(LOG_INFO, LOG_TOPIC, dev, 0, __VA_ARGS__)
#define log_dev_notice(dev, ...)  log_full_errno(LOG_NOTICE, LOG_TOPIC, dev, 0, __VA_ARGS__)
#define log_dev_warning(dev, ...) log_full_errno(LOG_WARNING, LOG_TOPIC, dev, 0, __VA_ARGS__)
#define log_dev_error(dev, ...)   log_full_errno(LOG_ERR, LOG_TOPIC, dev, 0, __VA_ARGS__)
#define log_dev_warning_errno(dev, e, ...) log_full_errno(LOG_WARNING, LOG_TOPIC, dev, e, __VA_ARGS__)
#define log_dev_error_errno(dev, e, ...)   log_full_errno(LOG_ERR, LOG_TOPIC, dev, e, __VA_ARGS__)
