/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>

#include "sim/esplog.h"

char esp_log_level_letter(EspLogLevel l) {
        static const char letters[_ESP_LOG_MAX] = {
                [ESP_LOG_ERROR] = 'E', [ESP_LOG_WARN] = 'W', [ESP_LOG_INFO] = 'I',
                [ESP_LOG_DEBUG] = 'D', [ESP_LOG_VERBOSE] = 'V',
        };
        if ((int) l < 0 || l >= _ESP_LOG_MAX)
                return 0;
        return letters[l];
}

int esp_log_vformat(char *buf, size_t size, EspLogLevel level, uint32_t ms, const char *tag,
                    const char *fmt, va_list ap) {
        char letter = esp_log_level_letter(level);
        int n, m;

        if (!buf || size < 2 || !letter || !tag || !*tag)
                return -EINVAL;
        n = snprintf(buf, size, "%c (%" PRIu32 ") %s: ", letter, ms, tag);
        if (n < 0)
                return -EINVAL;
        if ((size_t) n >= size) {
                buf[size - 1] = 0;
                return (int) size - 1;
        }
        m = vsnprintf(buf + n, size - (size_t) n, fmt, ap);
        if (m < 0)
                return -EINVAL;
        if ((size_t) n + (size_t) m < size)
                return n + m;
        /* Cut: drop a trailing UTF-8 sequence that lost its tail. */
        size_t end = size - 1, lead = end;
        while (lead > (size_t) n && ((unsigned char) buf[lead - 1] & 0xC0) == 0x80)
                lead--;
        if (lead > (size_t) n) {
                unsigned char c = (unsigned char) buf[lead - 1];
                size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
                if ((lead - 1) + need > end)
                        end = lead - 1;
        }
        buf[end] = 0;
        return (int) end;
}

int esp_log_format(char *buf, size_t size, EspLogLevel level, uint32_t ms, const char *tag,
                   const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = esp_log_vformat(buf, size, level, ms, tag, fmt, ap);
        va_end(ap);
        return r;
}
