/* SPDX-License-Identifier: MIT */
#pragma once

/* The streaming part of esp_https_ota + esp_ota_ops, without the network
 * (esp-formats.md §7.2, §8): bytes in, flash written, image validated.
 *
 *   ota_writer_new(flash, table, efuse, running, &opts, &w, err, n)
 *           target = the passive slot (esp_ota_get_next_update_partition);
 *           refused with -ESP_ERR_OTA_ROLLBACK_INVALID_STATE while the
 *           running app is still PENDING_VERIFY
 *   [ota_writer_resume(w, offset, …)]   continue an interrupted download
 *   ota_writer_write(w, chunk, n, …)    any chunk sizes
 *           the first 1,024 bytes are buffered and checked before anything is
 *           written: chip id (-ESP_ERR_INVALID_VERSION), version strictly
 *           higher than the running one (app_version_compare) unless
 *           allow_equal_version (-ESP_FAIL_CODE, as the advanced_https_ota
 *           example aborts; "same"/"older" in err), secure_version
 *           >= eFuse SECURE_VERSION (-ESP_ERR_OTA_SMALL_SEC_VER); then each
 *           4 KiB sector is erased just before the write reaches it; flash
 *           is written one whole sector at a time (up to 4 KiB wait in the
 *           writer)
 *   [ota_writer_flush(w, …)]            the transfer ended early: flash what
 *           waits, so that a resume continues after every byte that arrived
 *   ota_writer_finish(w, …)             hash, then signature (SBv2 against the
 *           eFuse digests with SECURE_BOOT_EN, or the running app's first-block
 *           key in the §6.2 mode): -ESP_ERR_OTA_VALIDATE_FAILED and the target's
 *           first sector erased (unbootable) on failure
 *   ota_writer_set_boot(w)              otadata: the target becomes NEW
 *   ota_writer_free(w)
 *
 * Memory per writer: the 1 KiB header buffer, the 4 KiB sector buffer, the verifier's two SHA-256
 * states and its 4 KiB signature sector copy, whatever the image size.
 * Errors carry a message in err; after a failed write the writer refuses
 * further writes with the same error. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flash/flash.h"
#include "flash/partition-table.h"
#include "image/app-image.h"
#include "ota/boot.h"

typedef struct Efuse Efuse;
typedef struct OtaWriter OtaWriter;

typedef struct OtaWriterOptions {
        uint16_t chip_id;                   /* expected image chip id (ESP_CHIP_ID_ESP32C3 …) */
        bool allow_equal_version;           /* tests: accept the running version again */
        bool signed_apps_no_secure_boot;    /* §6.2 mode (see boot.h) */
} OtaWriterOptions;

/* `running` is the app that boot_run() booted (copied). */
int ota_writer_new(Flash *flash, const PartitionTable *table, Efuse *efuse, const BootApp *running,
                   const OtaWriterOptions *o, OtaWriter **ret, char *err, size_t errlen);
OtaWriter *ota_writer_free(OtaWriter *w);

/* Before the first write: continue after `offset` bytes that an earlier
 * writer for the same target already wrote (offset >= 1024, so the header
 * was checked then). The bytes are read back from flash to rebuild the hash
 * state and checked again; -ESP_ERR_INVALID_STATE if the flash does not hold
 * a valid start of an image there, with the reason in err. */
int ota_writer_resume(OtaWriter *w, uint64_t offset, char *err, size_t errlen);

int ota_writer_write(OtaWriter *w, const void *data, size_t len, char *err, size_t errlen);

/* True once the first 1,024 bytes (or the whole header) passed the checks;
 * the incoming app's descriptor is then available. */
bool ota_writer_have_desc(const OtaWriter *w);
const AppDesc *ota_writer_desc(const OtaWriter *w);          /* NULL before have_desc */
uint16_t ota_writer_image_chip_id(const OtaWriter *w);       /* valid after have_desc */
/* Bytes accepted so far (including any resumed prefix); bytes on flash lag
 * by < 1024 until the header was checked, then by < 4096 until the next
 * sector boundary, ota_writer_flush() or ota_writer_finish(). */
uint64_t ota_writer_written(const OtaWriter *w);
/* Bytes actually on flash: what a later ota_writer_resume() may use. */
uint64_t ota_writer_flashed(const OtaWriter *w);
unsigned ota_writer_target_slot(const OtaWriter *w);
/* The image length from its segment headers once known (0 before). */
uint64_t ota_writer_image_len(const OtaWriter *w);

int ota_writer_flush(OtaWriter *w, char *err, size_t errlen);
int ota_writer_finish(OtaWriter *w, char *err, size_t errlen);
int ota_writer_set_boot(OtaWriter *w, char *err, size_t errlen);

/* The update is given up (esp_ota_abort; a cancelled or failed download, a
 * device restart or daemon stop mid-download): unless ota_writer_set_boot()
 * succeeded, erases the target's first sector if this writer (or the one it
 * resumed) put anything there, so that a partial image never looks like an
 * app to the bootloader's fallback (§7.2 step 4). A target that was never
 * touched (refused within the first 1,024 bytes) keeps what it held. The
 * writer refuses further writes afterwards. Returns 0 or the erase error. */
int ota_writer_abort(OtaWriter *w);
