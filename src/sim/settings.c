/* SPDX-License-Identifier: MIT */
#include "basic/macro.h"
#include "basic/esp-err.h"
#include "basic/secret-mem.h"
#include "flash/partition-table.h"
#include "nvs/nvs.h"
#include "sim/settings.h"

struct SettingsStore {
        FlashRegion region;             /* the nvs partition */
        NvsXtsKeys keys;
        bool encrypted;
};

int settings_store_open(Flash *flash, const PartitionTable *table, const NvsXtsKeys *keys, SettingsStore **ret) {
        const Partition *p;
        SettingsStore *s;

        p = partition_table_find_by_name(table, "nvs")
                ?: partition_table_find(table, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_NVS);
        if (!p)
                return -ENOENT;
        s = secret_alloc0(sizeof *s);   /* the keys: out of core dumps */
        if (!s)
                return -ENOMEM;
        s->region = partition_region(flash, p);
        if (keys) {
                s->keys = *keys;
                s->encrypted = true;
        }
        *ret = s;
        return 0;
}

SettingsStore *settings_store_close(SettingsStore *s) {
        if (s) {
                secret_free(s, sizeof *s);
        }
        return NULL;
}

static int not_found_ok(int r) {
        return r == -ESP_ERR_NVS_NOT_FOUND ? 0 : r;
}

int settings_load(SettingsStore *s, DeviceSettings *ret) {
        DeviceSettings d = {};
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        int r;

        *ret = d;
        r = nvs_open_region(&s->region, s->encrypted ? &s->keys : NULL, NVS_OPEN_READ_ONLY, &nvs);
        if (r < 0)
                return r;
        r = nvs_handle_open(nvs, SETTINGS_NAMESPACE, NVS_READONLY, &h);
        if (r == -ESP_ERR_NVS_NOT_FOUND) { /* namespace never written */
                nvs_close(nvs);
                return 0;
        }
        if (r >= 0) {
                size_t len = sizeof d.url;
                r = not_found_ok(nvs_get_str(h, "url", d.url, &len));
                if (r < 0)
                        d.url[0] = 0;
        }
        if (r >= 0)
                r = not_found_ok(nvs_get_u8(h, "use_url", &d.use_url));
        if (r >= 0)
                r = not_found_ok(nvs_get_u32(h, "interval", &d.interval));
        nvs_handle_close(h);
        nvs_close(nvs);
        if (r < 0)
                return r;
        if (d.use_url > 1)
                d.use_url = 1;
        *ret = d;
        return 0;
}

int settings_save(SettingsStore *s, const DeviceSettings *set) {
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        int r;

        r = nvs_open_region(&s->region, s->encrypted ? &s->keys : NULL, 0, &nvs);
        if (r < 0)
                return r;
        r = nvs_handle_open(nvs, SETTINGS_NAMESPACE, NVS_READWRITE, &h);
        if (r >= 0)
                r = nvs_set_str(h, "url", set->url);
        if (r >= 0)
                r = nvs_set_u8(h, "use_url", set->use_url);
        if (r >= 0 && set->interval != 0)
                r = nvs_set_u32(h, "interval", set->interval);
        if (r >= 0)
                r = nvs_commit(h);
        nvs_handle_close(h);
        nvs_close(nvs);
        return r;
}
