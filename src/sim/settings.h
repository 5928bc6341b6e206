/* SPDX-License-Identifier: MIT */
#pragma once

/* Device settings as secure_esp keeps them (NVS namespace "secure_esp",
 * keys url, use_url, interval), behind one small interface: the backing is
 * the device's nvs partition once src/nvs lands, a per-device file until
 * then. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SETTINGS_URL_MAX 255                /* secure_esp: at most 255 bytes */
#define SETTINGS_INTERVAL_MIN 300u          /* secure_esp README: 300..9,999,999 s */
#define SETTINGS_INTERVAL_MAX 9999999u

typedef struct DeviceSettings {
        char url[SETTINGS_URL_MAX + 1];     /* "" = never set */
        uint8_t use_url;                    /* 0 = the fleet default URL, 1 = url */
        uint32_t interval;                  /* seconds; 0 = never set */
} DeviceSettings;

typedef struct SettingsStore SettingsStore;

/* Opens the store of one device. `device_dir` is FLEET/devices/<id>. */
int settings_store_open(const char *device_dir, SettingsStore **ret);
SettingsStore *settings_store_close(SettingsStore *s);

/* Reads the settings; keys never written keep their zero values. */
int settings_load(SettingsStore *s, DeviceSettings *ret);
/* Writes every key that differs from what is stored (atomically per key). */
int settings_save(SettingsStore *s, const DeviceSettings *set);
