/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "basic/macro.h"
#include "basic/string-table.h"
#include "sim/payload.h"
#include "sim/settings.h"

static const char *const device_command_table[_DEVICE_COMMAND_MAX] = {
        [DEVICE_COMMAND_URL] = "update/url",
        [DEVICE_COMMAND_USE_URL] = "update/use_url",
        [DEVICE_COMMAND_INTERVAL] = "update/interval",
        [DEVICE_COMMAND_RUN] = "update/run",
        [DEVICE_COMMAND_RESTART] = "restart",
};
DEFINE_STRING_TABLE_LOOKUP(device_command, DeviceCommand);

int command_from_topic(const char *topic, const char *id, DeviceCommand *ret, bool *ret_broadcast) {
        bool broadcast = true;
        const char *rest;

        if (!topic || !strneq(topic, "/esp/", 5))
                return -ENOENT;
        rest = topic + 5;
        size_t idlen = id ? strlen(id) : 0;
        if (idlen > 0 && strneq(rest, id, idlen) && rest[idlen] == '/') {
                rest += idlen + 1;
                broadcast = false;
        }
        DeviceCommand c = device_command_from_string(rest);
        if (c < 0)
                return -ENOENT;
        *ret = c;
        if (ret_broadcast)
                *ret_broadcast = broadcast;
        return 0;
}

int command_topic(DeviceCommand c, const char *id, char *buf, size_t size) {
        const char *s = device_command_to_string(c);
        int n;

        if (!s)
                return -EINVAL;
        n = id ? snprintf(buf, size, "/esp/%s/%s", id, s) : snprintf(buf, size, "/esp/%s", s);
        return n < 0 || (size_t) n >= size ? -ENOBUFS : 0;
}

static bool printable(const char *p, size_t len) {
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) p[i] <= 0x20 || p[i] == 0x7f)
                        return false;
        return true;
}

int payload_parse_url(const void *payload, size_t len, char *ret, size_t ret_size, char *reason, size_t n) {
        const char *p = payload;

        if (len == 0) {
                snprintf(reason, n, "empty URL");
                return -EINVAL;
        }
        if (len > SETTINGS_URL_MAX) {
                snprintf(reason, n, "URL is %zu bytes, at most %u are allowed", len, SETTINGS_URL_MAX);
                return -EINVAL;
        }
        if (memchr(p, 0, len) || !printable(p, len)) {
                snprintf(reason, n, "URL contains a space, a control character or a NUL byte");
                return -EINVAL;
        }
        if (len < 8 || !strneq(p, "https://", 8)) {
                snprintf(reason, n, "only https:// URLs are accepted");
                return -EINVAL;
        }
        if (len == 8 || p[8] == '/' || p[8] == ':' || p[8] == '?' || p[8] == '#') {
                snprintf(reason, n, "URL has no host");
                return -EINVAL;
        }
        if (len + 1 > ret_size)
                return -ENOBUFS;
        memcpy(ret, p, len);
        ret[len] = 0;
        return 0;
}

int payload_parse_use_url(const void *payload, size_t len, uint8_t *ret, char *reason, size_t n) {
        const char *p = payload;

        if (len == 1 && (p[0] == '0' || p[0] == '1')) {
                *ret = (uint8_t) (p[0] - '0');
                return 0;
        }
        snprintf(reason, n, "use_url must be \"0\" or \"1\"");
        return -EINVAL;
}

int payload_parse_interval(const void *payload, size_t len, uint32_t *ret, char *reason, size_t n) {
        const char *p = payload;
        uint64_t v = 0;

        if (len == 0 || len > 10) {
                snprintf(reason, n, "interval must be an integer from %u to %u seconds", SETTINGS_INTERVAL_MIN,
                         SETTINGS_INTERVAL_MAX);
                return -EINVAL;
        }
        for (size_t i = 0; i < len; i++) {
                if (p[i] < '0' || p[i] > '9') {
                        snprintf(reason, n, "interval must be an integer from %u to %u seconds",
                                 SETTINGS_INTERVAL_MIN, SETTINGS_INTERVAL_MAX);
                        return -EINVAL;
                }
                v = v * 10 + (uint64_t) (p[i] - '0');
        }
        if (v < SETTINGS_INTERVAL_MIN || v > SETTINGS_INTERVAL_MAX) {
                snprintf(reason, n, "interval %llu is out of range %u..%u", (unsigned long long) v,
                         SETTINGS_INTERVAL_MIN, SETTINGS_INTERVAL_MAX);
                return -EINVAL;
        }
        *ret = (uint32_t) v;
        return 0;
}

int topic_expand(const char *tmpl, const char *id, char *buf, size_t size) {
        size_t o = 0;

        for (const char *p = tmpl; *p; p++) {
                const char *piece = p;
                size_t len = 1;
                if (p[0] == '%' && p[1] == 's') {
                        piece = id;
                        len = strlen(id);
                        p++;
                }
                if (o + len >= size)
                        return -ENOBUFS;
                memcpy(buf + o, piece, len);
                o += len;
        }
        if (o >= size)
                return -ENOBUFS;
        buf[o] = 0;
        return 0;
}
