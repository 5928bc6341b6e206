/* SPDX-License-Identifier: MIT */
#pragma once

/* Device log lines exactly as ESP-IDF's esp_log prints them without colours
 * (components/log: LOG_FORMAT(letter, format) = "<L> (<ms>) <tag>: <msg>"),
 * with <ms> = esp_log_timestamp(), milliseconds since boot (uint32). */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/macro.h"

typedef enum EspLogLevel {
        ESP_LOG_ERROR,          /* E */
        ESP_LOG_WARN,           /* W */
        ESP_LOG_INFO,           /* I */
        ESP_LOG_DEBUG,          /* D */
        ESP_LOG_VERBOSE,        /* V */
        _ESP_LOG_MAX,
        _ESP_LOG_INVALID = -EINVAL,
} EspLogLevel;

char esp_log_level_letter(EspLogLevel l);

/* Formats one line (no trailing newline) into buf. Too long a message is cut
 * at a UTF-8-safe byte boundary and still NUL-terminated. Returns the length
 * written, or -EINVAL for a bad level, tag or buffer. */
int esp_log_format(char *buf, size_t size, EspLogLevel level, uint32_t ms, const char *tag,
                   const char *fmt, ...) _printf_(6, 7);
int esp_log_vformat(char *buf, size_t size, EspLogLevel level, uint32_t ms, const char *tag,
                    const char *fmt, va_list ap) _printf_(6, 0);
