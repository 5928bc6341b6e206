/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/parse-util.h"
#include "sim/settings.h"

/* File backing: "url=<url>\nuse_url=<0|1>\ninterval=<n>\n", mode 0600,
 * written with write_file_atomic() so a crash leaves the old or the new
 * settings, never a mix. */
struct SettingsStore {
        char *path;
};

int settings_store_open(const char *device_dir, SettingsStore **ret) {
        SettingsStore *s = calloc(1, sizeof *s);

        if (!s)
                return -ENOMEM;
        if (asprintf(&s->path, "%s/settings", device_dir) < 0) {
                free(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

SettingsStore *settings_store_close(SettingsStore *s) {
        if (s) {
                free(s->path);
                free(s);
        }
        return NULL;
}

int settings_load(SettingsStore *s, DeviceSettings *ret) {
        _cleanup_free_ uint8_t *data = NULL;
        DeviceSettings d = {};
        size_t size;
        int r;

        *ret = d;
        r = read_full_file(s->path, 4096, &data, &size);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        for (char *line = (char *) data, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                char *eq = strchr(line, '=');
                if (!eq)
                        return -EBADMSG;
                *eq = 0;
                const char *v = eq + 1;
                uint32_t u;
                if (streq(line, "url")) {
                        if (strlen(v) > SETTINGS_URL_MAX)
                                return -EBADMSG;
                        snprintf(d.url, sizeof d.url, "%s", v);
                } else if (streq(line, "use_url")) {
                        if (safe_atou32(v, 10, &u) < 0 || u > 1)
                                return -EBADMSG;
                        d.use_url = (uint8_t) u;
                } else if (streq(line, "interval")) {
                        if (safe_atou32(v, 10, &u) < 0)
                                return -EBADMSG;
                        d.interval = u;
                } else
                        return -EBADMSG;
        }
        *ret = d;
        return 0;
}

int settings_save(SettingsStore *s, const DeviceSettings *set) {
        char buf[512];
        int n;

        n = snprintf(buf, sizeof buf, "url=%s\nuse_url=%u\ninterval=%" PRIu32 "\n", set->url,
                     (unsigned) set->use_url, set->interval);
        if (n < 0 || (size_t) n >= sizeof buf)
                return -EINVAL;
        return write_file_atomic(s->path, buf, (size_t) n, 0600);
}
