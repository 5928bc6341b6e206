/* SPDX-License-Identifier: MIT */
#pragma once

/* Device settings as secure_esp keeps them: NVS namespace "secure_esp",
 * keys url (string), use_url (u8), interval (u32), in the device's `nvs`
 * partition inside its flash image (src/nvs), encrypted when the fleet uses
 * NVS encryption. Callers see only this interface. */

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
typedef struct Flash Flash;
typedef struct PartitionTable PartitionTable;
typedef struct NvsXtsKeys NvsXtsKeys;

/* Opens the store of one device: its flash and partition table (borrowed,
 * must outlive the store) and, for an encrypted NVS, its XTS keys (copied;
 * NULL = plaintext). -ENOENT when the table has no nvs partition. */
int settings_store_open(Flash *flash, const PartitionTable *table, const NvsXtsKeys *keys, SettingsStore **ret);
SettingsStore *settings_store_close(SettingsStore *s);

/* Reads the settings; keys never written keep their zero values. Errors are
 * -ESP_ERR_NVS_* (esp_err_to_name() names them), with zero values. */
int settings_load(SettingsStore *s, DeviceSettings *ret);
/* Writes the three keys and commits (ESP-IDF semantics: each key is
 * written before its old entry is erased, so a power cut keeps either). */
int settings_save(SettingsStore *s, const DeviceSettings *set);
