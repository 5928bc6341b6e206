/* SPDX-License-Identifier: MIT */
#pragma once

/* Device settings as secure_esp keeps them (NVS namespace "secure_esp",
 * keys url, use_url, interval), behind one small interface. The backing is a
 * small per-device file (devices/<id>/settings) until the daemon moves onto
 * the device's nvs partition (src/nvs); callers never see the difference. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SETTINGS_NAMESPACE "secure_esp"
#define SETTINGS_URL_MAX 255                /* secure_esp: at most 255 bytes */
#define SETTINGS_INTERVAL_MIN 300u          /* secure_esp README: 300..9,999,999 s */
#define SETTINGS_INTERVAL_MAX 9999999u

typedef struct DeviceSettings {
        char url[SETTINGS_URL_MAX + 1];     /* "" = never set */
        uint8_t use_url;                    /* 0 = the fleet default URL, 1 = url */
        uint32_t interval;                  /* seconds; 0 = never set */
} DeviceSettings;

typedef struct SettingsStore SettingsStore;

/* Opens the store of one device; `device_dir` is FLEET/devices/<id>. */
int settings_store_open(const char *device_dir, SettingsStore **ret);
SettingsStore *settings_store_close(SettingsStore *s);

/* Reads the settings; keys never written keep their zero values. A corrupt
 * store gives -EBADMSG and zero values. */
int settings_load(SettingsStore *s, DeviceSettings *ret);
/* Writes the settings atomically (all keys or none). */
int settings_save(SettingsStore *s, const DeviceSettings *set);
