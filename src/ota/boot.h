/* SPDX-License-Identifier: MIT */
#pragma once

/* The second-stage bootloader's app selection (esp-formats.md §7.2, §7.3),
 * run at every start of an emulated device, and the app-side rollback calls
 * (esp_ota_mark_app_valid_cancel_rollback, esp_ota_mark_app_invalid_rollback).
 *
 * What boot_run() does, as ESP-IDF's bootloader with
 * CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE and CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK:
 *   1. any otadata entry in PENDING_VERIFY is rewritten as ABORTED (the
 *      previous boot never confirmed it);
 *   2. the valid entry (seq != 0xFFFFFFFF, crc ok, state not INVALID/ABORTED)
 *      with the larger seq selects slot (seq - 1) mod N; entries whose app's
 *      secure_version is below the eFuse SECURE_VERSION are skipped;
 *   3. the image is read once: header, segments, checksum and appended
 *      SHA-256 streamed; then the Secure Boot V2 sector is checked against the
 *      non-revoked eFuse digests when SECURE_BOOT_EN, or in the §6.2 mode
 *      against the previous app's first-block key;
 *   4. an image that fails (or whose behaviour marker is boot-fail, or whose
 *      secure_version is too low) is skipped: walk backwards from that slot,
 *      then forwards through the others;
 *   5. when the booted slot's entry is NEW it becomes PENDING_VERIFY; when it
 *      is VALID the eFuse SECURE_VERSION is raised to the app's value;
 *      a boot-fail image's entry is rewritten ABORTED so the next boot does
 *      not pick it;
 *   6. with no valid entry: ota_0 (then the others), and on success otadata
 *      entry 0 = {seq = slot + 1, VALID}.
 *
 * Errors: -ESP_ERR_NOT_FOUND when no app can boot (the result still holds
 * the log lines), -ESP_ERR_INVALID_ARG for a table without ota_0, negative
 * errno from flash I/O. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "image/app-image.h"

typedef struct Efuse Efuse;
typedef struct BootCache BootCache;

#define BOOT_MAX_SLOTS 16

typedef struct BootOptions {
        /* §6.2 "signed apps without hardware secure boot": with SECURE_BOOT_EN
         * clear, still require a signature, trusting `trusted_key_digest`
         * when has_trusted_key_digest (the running app's first-block key, as
         * the device remembers it), else the first-block key of the app the
         * last VALID otadata entry names (on a first boot: the image's own). */
        bool signed_apps_no_secure_boot;
        bool has_trusted_key_digest;
        uint8_t trusted_key_digest[32];
        uint64_t start_ms;          /* timestamp of the first log line (ms since reset), 0 = 25 */
        /* Verification results per image (boot-cache.h), shared by the
         * devices of a process; NULL = verify every image in full. It never
         * changes a verdict or a log line. Not owned. */
        BootCache *cache;
} BootOptions;

/* The app that runs after a boot. */
typedef struct BootApp {
        int slot;                   /* ota_<slot>; -1 when nothing booted */
        FlashRegion region;         /* its partition */
        AppDesc desc;               /* version, secure_version, project… */
        AppBehaviour behaviour;     /* ok / no-connect (boot-fail never boots) */
        uint32_t ota_state;         /* its otadata entry after boot (OTA_IMG_*, flash/otadata.h) */
        bool has_key_digest;        /* signed: first signature block's key digest */
        uint8_t key_digest[32];
} BootApp;

typedef struct BootResult {
        BootApp app;
        bool rolled_back;           /* the selected slot failed; another one booted */
        bool efuse_changed;         /* SECURE_VERSION was raised: save the eFuse file */
        char **log;                 /* ESP-IDF bootloader lines "I (27) boot: …", NULL-terminated */
        size_t n_log;
} BootResult;

/* Frees the log lines and zeroes the result. */
void boot_result_done(BootResult *r);

/* Boots: selects, verifies and (as the bootloader does) rewrites otadata and
 * raises the eFuse secure version. `efuse` is modified in memory only; the
 * caller saves it when ret->efuse_changed. */
int boot_run(Flash *flash, const PartitionTable *table, Efuse *efuse, const BootOptions *o, BootResult *ret);

/* esp_ota_mark_app_valid_cancel_rollback(): the running app's entry becomes
 * VALID (no-op if it already is) and the eFuse SECURE_VERSION is raised to
 * the app's (*efuse_changed set when it was). */
int boot_mark_app_valid(Flash *flash, const PartitionTable *table, Efuse *efuse, const BootApp *running,
                        bool *efuse_changed);

/* esp_ota_mark_app_invalid_rollback(): the running app's entry becomes
 * INVALID so the next boot_run() picks the other app. Refused with
 * -ESP_ERR_OTA_ROLLBACK_FAILED (nothing changed) when no other slot holds an
 * app that would boot. */
int boot_mark_app_invalid_rollback(Flash *flash, const PartitionTable *table, Efuse *efuse,
                                   const BootApp *running, const BootOptions *o);

/* The otadata state of the entry that selects `slot` as the active one, or
 * OTA_IMG_UNDEFINED when no valid entry does (esp_ota_get_state_partition). */
int boot_get_slot_state(Flash *flash, const PartitionTable *table, unsigned slot, uint32_t *ret);

/* esp_ota_set_boot_partition() after the image was validated: the active
 * entry already naming `slot` only gets its state rewritten; otherwise the
 * other otadata sector gets the next seq for `slot` and state NEW (rollback
 * enabled). */
int boot_set_boot_slot(Flash *flash, const PartitionTable *table, unsigned slot);

/* Writes a first-boot otadata (entry 0 = {seq = slot + 1, state}) after
 * erasing both sectors. For provisioning. */
int boot_init_otadata(Flash *flash, const PartitionTable *table, unsigned slot, uint32_t state);

/* Verifies the app in `slot` as boot_run() would (hash, signature, secure
 * version), without touching otadata or the eFuse. Fills *ret (optional)
 * with its descriptor; err names the reason for a refusal. */
int boot_verify_slot(Flash *flash, const PartitionTable *table, const Efuse *efuse, const BootOptions *o,
                     unsigned slot, BootApp *ret, char *err, size_t errlen);
