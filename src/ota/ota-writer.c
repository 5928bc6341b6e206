/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_OTA

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "dsemu/efuse.h"
#include "image/sbv2.h"
#include "ota/ota-writer.h"

#define RESUME_READ_CHUNK (16u * 1024u)

typedef enum OtaWriterPhase {
        OTA_WRITER_HEADER,     /* buffering the first APP_IMAGE_PEEK_LEN bytes */
        OTA_WRITER_BODY,       /* header accepted; streaming to flash */
        OTA_WRITER_FINISHED,   /* validated */
        OTA_WRITER_FAILED,     /* every call returns `error` */
        _OTA_WRITER_PHASE_MAX,
        _OTA_WRITER_PHASE_INVALID = -EINVAL,
} OtaWriterPhase;

struct OtaWriter {
        Flash *flash;                   /* not owned */
        const PartitionTable *table;    /* not owned */
        Efuse *efuse;                   /* not owned */
        BootApp running;
        OtaWriterOptions opts;

        unsigned target_slot;
        FlashRegion target;
        AppImageVerifier *verifier;
        OtaWriterPhase phase;
        int error;
        char error_message[256];

        uint8_t head[APP_IMAGE_PEEK_LEN];
        size_t head_len;
        uint64_t written;               /* bytes accepted */
        uint64_t flashed;               /* bytes on flash */
        /* Accepted body bytes not on flash yet: flash takes whole sectors
         * (a sector-store range stores a sector once it is complete; a
         * write that ends inside one goes to the device's own file first),
         * so the body is flashed from one sector boundary to the next and
         * the piece after the last boundary waits for ota_writer_flush()
         * (a transfer that ended early) or ota_writer_finish(). Killed in
         * between, these bytes are lost, as a chip's HTTP buffer is. */
        uint8_t stage[FLASH_SECTOR_SIZE];
        size_t stage_len;
        uint64_t erased_end;            /* [0, erased_end) of the target was erased by us */
        bool boot_set;                  /* otadata selects the target: never erase it again */
        bool dirty;                     /* the target holds bytes of this update (ours or resumed) */
        AppImageInfo info;              /* after finish */
};

static int writer_fail(OtaWriter *w, int error, char *err, size_t errlen, const char *fmt, ...) _printf_(5, 6);
static int writer_fail(OtaWriter *w, int error, char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(w->error_message, sizeof w->error_message, fmt, ap);
        va_end(ap);
        w->phase = OTA_WRITER_FAILED;
        w->error = error;
        if (err && errlen > 0)
                snprintf(err, errlen, "%s", w->error_message);
        return error;
}

static int writer_failed(const OtaWriter *w, char *err, size_t errlen) {
        if (err && errlen > 0)
                snprintf(err, errlen, "%s", w->error_message);
        return w->error;
}

int ota_writer_new(Flash *flash, const PartitionTable *table, Efuse *efuse, const BootApp *running,
                   const OtaWriterOptions *o, OtaWriter **ret, char *err, size_t errlen) {
        OtaWriter *w;
        const Partition *p;
        unsigned n_slots;
        uint32_t state;
        int k;

        if (!flash || !table || !efuse || !running || !o || !ret)
                return -EINVAL;

        n_slots = partition_table_ota_count(table);
        if (n_slots < 2) {
                snprintf(err, errlen, "the partition table has %u OTA app partition(s); OTA needs two", n_slots);
                return -ESP_ERR_NOT_FOUND;
        }

        /* esp_ota_begin(): no new update while the running app is unconfirmed (§7.2) */
        if (running->slot >= 0) {
                k = boot_get_slot_state(flash, table, (unsigned) running->slot, &state);
                if (k < 0) {
                        snprintf(err, errlen, "cannot read otadata: %s", esp_err_to_name(k));
                        return k;
                }
                if (state == OTA_IMG_PENDING_VERIFY) {
                        snprintf(err, errlen, "the running app is still PENDING_VERIFY; confirm it (mark valid) before a new OTA");
                        return -ESP_ERR_OTA_ROLLBACK_INVALID_STATE;
                }
        }
        if (o->signed_apps_no_secure_boot && !efuse_secure_boot_enabled(efuse) && !running->has_key_digest) {
                snprintf(err, errlen, "signed apps are required, and the running app is not signed: updates are refused");
                return -ESP_ERR_OTA_VALIDATE_FAILED;
        }

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->flash = flash;
        w->table = table;
        w->efuse = efuse;
        w->running = *running;
        w->opts = *o;
        /* esp_ota_get_next_update_partition(): the slot after the running one */
        w->target_slot = running->slot >= 0 ? ((unsigned) running->slot + 1) % n_slots : 0;
        p = partition_table_find_ota(table, w->target_slot);
        w->target = partition_region(flash, p);

        k = app_image_verifier_new(w->target.size, &w->verifier);
        if (k < 0) {
                ota_writer_free(w);
                return k;
        }
        *ret = w;
        return 0;
}

OtaWriter *ota_writer_free(OtaWriter *w) {
        if (!w)
                return NULL;
        app_image_verifier_free(w->verifier);
        free(w);
        return NULL;
}

/* §8: chip id, version, secure_version, from the first 1,024 bytes. */
static int writer_check_header(OtaWriter *w, char *err, size_t errlen) {
        const AppImageHeader *h = app_image_verifier_header(w->verifier);
        const AppDesc *d = app_image_verifier_desc(w->verifier);
        unsigned efuse_sv;
        int cmp;

        if (!h || !d)
                return writer_fail(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen,
                                   "the first %d bytes do not hold an image header and app descriptor",
                                   APP_IMAGE_PEEK_LEN);
        if (h->chip_id != w->opts.chip_id)
                return writer_fail(w, -ESP_ERR_INVALID_VERSION, err, errlen,
                                   "Mismatch chip id, expected %u (%s), found %u (%s)", w->opts.chip_id,
                                   strna(esp_chip_id_to_string(w->opts.chip_id)), h->chip_id,
                                   strna(esp_chip_id_to_string(h->chip_id)));
        cmp = app_version_compare(d->version, w->running.desc.version);
        if (cmp < 0)
                return writer_fail(w, -ESP_FAIL_CODE, err, errlen,
                                   "New firmware version '%s' is older than the running version '%s'. "
                                   "We will not continue the update.", d->version, w->running.desc.version);
        if (cmp == 0 && !w->opts.allow_equal_version)
                return writer_fail(w, -ESP_FAIL_CODE, err, errlen,
                                   "Current running version '%s' is the same as a new. We will not continue the update.",
                                   w->running.desc.version);
        efuse_sv = efuse_secure_version(w->efuse);
        if (d->secure_version < efuse_sv)
                return writer_fail(w, -ESP_ERR_OTA_SMALL_SEC_VER, err, errlen,
                                   "New firmware security version is less than eFuse programmed, %" PRIu32 " < %u",
                                   d->secure_version, efuse_sv);
        return 0;
}

/* Flash semantics: erase each 4 KiB sector just before the write reaches it. */
static int writer_flash(OtaWriter *w, const uint8_t *data, size_t len, char *err, size_t errlen) {
        uint64_t end = w->flashed + len;
        int k;

        if (end > w->target.size)
                return writer_fail(w, -ESP_ERR_INVALID_SIZE, err, errlen,
                                   "image larger than the partition ota_%u (%" PRIu32 " bytes)", w->target_slot,
                                   w->target.size);
        while (w->erased_end < end) {
                k = flash_region_erase(&w->target, (uint32_t) w->erased_end, FLASH_SECTOR_SIZE);
                if (k < 0)
                        return writer_fail(w, k, err, errlen, "flash erase at 0x%" PRIx64 " failed: %s",
                                           w->target.offset + w->erased_end, esp_err_to_name(k));
                w->erased_end += FLASH_SECTOR_SIZE;
                w->dirty = true;
        }
        k = flash_region_write(&w->target, (uint32_t) w->flashed, data, len);
        if (k < 0)
                return writer_fail(w, k, err, errlen, "flash write at 0x%" PRIx64 " failed: %s",
                                   w->target.offset + w->flashed, esp_err_to_name(k));
        w->flashed = end;
        return 0;
}

/* Flashes whole sectors only: straight from `data` where it covers them,
 * through `stage` where it does not. */
static int writer_stage(OtaWriter *w, const uint8_t *data, size_t len, char *err, size_t errlen) {
        int k;

        while (len > 0) {
                size_t room = FLASH_SECTOR_SIZE - (size_t) ((w->flashed + w->stage_len) % FLASH_SECTOR_SIZE);
                size_t n;

                if (w->stage_len == 0 && len >= room) {
                        n = room + (len - room) / FLASH_SECTOR_SIZE * FLASH_SECTOR_SIZE;
                        k = writer_flash(w, data, n, err, errlen);
                        if (k < 0)
                                return k;
                } else {
                        n = MIN(room, len);
                        memcpy(w->stage + w->stage_len, data, n);
                        w->stage_len += n;
                        if (n == room) {
                                k = writer_flash(w, w->stage, w->stage_len, err, errlen);
                                if (k < 0)
                                        return k;
                                w->stage_len = 0;
                        }
                }
                data += n;
                len -= n;
        }
        return 0;
}

static int writer_stage_flush(OtaWriter *w, char *err, size_t errlen) {
        int k;

        if (w->phase != OTA_WRITER_BODY || w->stage_len == 0)
                return 0;
        k = writer_flash(w, w->stage, w->stage_len, err, errlen);
        if (k < 0)
                return k;
        w->stage_len = 0;
        return 0;
}

/* A refused image must not boot: erase its first sector (§8, esp_ota_end). */
static int writer_invalidate(OtaWriter *w, int error, char *err, size_t errlen, const char *reason) {
        (void) flash_region_erase(&w->target, 0, FLASH_SECTOR_SIZE);
        return writer_fail(w, error, err, errlen, "%s", reason);
}

static int writer_feed(OtaWriter *w, const void *data, size_t len, char *err, size_t errlen) {
        char msg[200] = "";
        int k;

        k = app_image_verifier_feed(w->verifier, data, len, msg, sizeof msg);
        if (k < 0) {
                char reason[300];

                snprintf(reason, sizeof reason, "invalid image: %s", msg[0] ? msg : esp_err_to_name(k));
                if (w->flashed > 0)
                        /* part of it is on flash already: leave the slot unbootable */
                        return writer_invalidate(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen, reason);
                return writer_fail(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen, "%s", reason);
        }
        return 0;
}

static int writer_accept_header(OtaWriter *w, char *err, size_t errlen) {
        int k;

        k = writer_check_header(w, err, errlen);
        if (k < 0)
                return k;
        w->phase = OTA_WRITER_BODY;
        return writer_stage(w, w->head, w->head_len, err, errlen);
}

int ota_writer_write(OtaWriter *w, const void *data, size_t len, char *err, size_t errlen) {
        const uint8_t *p = data;
        int k;

        if (!w || (!data && len > 0))
                return -EINVAL;

        switch (w->phase) {
        case OTA_WRITER_FAILED:
                return writer_failed(w, err, errlen);
        case OTA_WRITER_FINISHED:
                return writer_fail(w, -ESP_ERR_INVALID_STATE, err, errlen, "write after the image was finished");
        case OTA_WRITER_HEADER: {
                size_t n = MIN(len, sizeof w->head - w->head_len);

                if (w->written == 0 && len > 0 && p[0] != APP_IMAGE_MAGIC)
                        /* esp_ota_write() refuses a first byte that is not 0xE9 */
                        return writer_fail(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen,
                                           "OTA image has invalid magic byte (expected 0xE9, saw 0x%02x)", p[0]);
                k = writer_feed(w, p, n, err, errlen);
                if (k < 0)
                        return k;
                memcpy(w->head + w->head_len, p, n);
                w->head_len += n;
                w->written += n;
                p += n;
                len -= n;
                if (w->head_len < sizeof w->head)
                        return 0;
                k = writer_accept_header(w, err, errlen);
                if (k < 0)
                        return k;
                break;
        }
        case OTA_WRITER_BODY:
                break;
        case _OTA_WRITER_PHASE_MAX:
        case _OTA_WRITER_PHASE_INVALID:
                return -EINVAL;
        }

        if (len == 0)
                return 0;
        k = writer_feed(w, p, len, err, errlen);
        if (k < 0)
                return k;
        k = writer_stage(w, p, len, err, errlen);
        if (k < 0)
                return k;
        w->written += len;
        return 0;
}

int ota_writer_resume(OtaWriter *w, uint64_t offset, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t pos = 0;
        int k;

        if (!w)
                return -EINVAL;
        if (w->phase != OTA_WRITER_HEADER || w->written != 0)
                return writer_fail(w, -ESP_ERR_INVALID_STATE, err, errlen, "resume must come before the first write");
        if (offset < APP_IMAGE_PEEK_LEN || offset > w->target.size)
                return writer_fail(w, -ESP_ERR_INVALID_STATE, err, errlen,
                                   "cannot resume at byte %" PRIu64 ": needs at least %d bytes already written",
                                   offset, APP_IMAGE_PEEK_LEN);

        /* an earlier writer of this update wrote there */
        w->dirty = true;

        buf = malloc(RESUME_READ_CHUNK);
        if (!buf)
                return -ENOMEM;

        /* rebuild the hash state from what is on flash */
        while (pos < offset) {
                size_t n = (size_t) MIN((uint64_t) RESUME_READ_CHUNK, offset - pos);
                char msg[200] = "";

                k = flash_region_read(&w->target, (uint32_t) pos, buf, n);
                if (k < 0)
                        return writer_fail(w, k, err, errlen, "cannot read back ota_%u: %s", w->target_slot,
                                           esp_err_to_name(k));
                if (pos == 0)
                        memcpy(w->head, buf, MIN(n, sizeof w->head));
                k = app_image_verifier_feed(w->verifier, buf, n, msg, sizeof msg);
                if (k < 0)
                        return writer_fail(w, -ESP_ERR_INVALID_STATE, err, errlen,
                                           "the first %" PRIu64 " bytes of ota_%u are not the start of an image: %s",
                                           offset, w->target_slot, msg);
                pos += n;
        }
        w->head_len = sizeof w->head;
        k = writer_check_header(w, err, errlen);
        if (k < 0)
                return k;
        w->phase = OTA_WRITER_BODY;
        w->written = w->flashed = offset;
        /* the sector holding `offset` was erased by the earlier writer */
        w->erased_end = ALIGN_TO(offset, FLASH_SECTOR_SIZE);
        return 0;
}

int ota_writer_flush(OtaWriter *w, char *err, size_t errlen) {
        if (!w)
                return -EINVAL;
        if (w->phase == OTA_WRITER_FAILED)
                return writer_failed(w, err, errlen);
        return writer_stage_flush(w, err, errlen);
}

int ota_writer_finish(OtaWriter *w, char *err, size_t errlen) {
        char msg[256] = "", reason[300];
        const uint8_t *sector;
        int k;

        if (!w)
                return -EINVAL;
        switch (w->phase) {
        case OTA_WRITER_FAILED:
                return writer_failed(w, err, errlen);
        case OTA_WRITER_FINISHED:
                return 0;
        case OTA_WRITER_HEADER:
                /* a short image: the whole of it is in the buffer */
                if (w->head_len == 0)
                        return writer_fail(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen, "no image data received");
                k = writer_accept_header(w, err, errlen);
                if (k < 0)
                        return k;
                break;
        case OTA_WRITER_BODY:
                break;
        case _OTA_WRITER_PHASE_MAX:
        case _OTA_WRITER_PHASE_INVALID:
                return -EINVAL;
        }

        k = writer_stage_flush(w, err, errlen);
        if (k < 0)
                return k;
        k = app_image_verifier_finish(w->verifier, &w->info, msg, sizeof msg);
        if (k < 0) {
                snprintf(reason, sizeof reason, "image validation failed: %s", msg);
                return writer_invalidate(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen, reason);
        }

        sector = w->info.has_signature_sector ? app_image_verifier_signature_sector(w->verifier) : NULL;
        if (efuse_secure_boot_enabled(w->efuse)) {
                uint8_t digests[3][32], trusted[3][32];
                bool present[3];
                size_t n = 0;

                k = efuse_secure_boot_digests(w->efuse, digests, present);
                if (k < 0)
                        return writer_fail(w, k, err, errlen, "cannot read the secure boot digests");
                for (unsigned i = 0; i < 3; i++)
                        if (present[i])
                                memcpy(trusted[n++], digests[i], 32);
                if (!sector)
                        return writer_invalidate(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen,
                                                 "secure boot check fail: the image is not signed (no signature sector)");
                k = sbv2_verify_sector(sector, SBV2_SECTOR_SIZE, w->info.signed_digest,
                                       (const uint8_t (*)[32]) trusted, n, NULL, msg, sizeof msg);
                if (k < 0) {
                        snprintf(reason, sizeof reason, "secure boot check fail: %s", msg);
                        return writer_invalidate(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen, reason);
                }
        } else if (w->opts.signed_apps_no_secure_boot) {
                /* §6.2: only the running app's first-block key is trusted */
                if (!sector)
                        return writer_invalidate(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen,
                                                 "signature check fail: the image is not signed (no signature sector)");
                k = sbv2_verify_sector(sector, SBV2_SECTOR_SIZE, w->info.signed_digest,
                                       (const uint8_t (*)[32]) w->running.key_digest, 1, NULL, msg, sizeof msg);
                if (k < 0) {
                        snprintf(reason, sizeof reason, "signature check fail: %s", msg);
                        return writer_invalidate(w, -ESP_ERR_OTA_VALIDATE_FAILED, err, errlen, reason);
                }
        }

        w->phase = OTA_WRITER_FINISHED;
        return 0;
}

int ota_writer_set_boot(OtaWriter *w, char *err, size_t errlen) {
        unsigned efuse_sv;
        int k;

        if (!w)
                return -EINVAL;
        if (w->phase == OTA_WRITER_FAILED)
                return writer_failed(w, err, errlen);
        if (w->phase != OTA_WRITER_FINISHED)
                return writer_fail(w, -ESP_ERR_INVALID_STATE, err, errlen, "set_boot before the image was finished");

        /* esp_ota_set_boot_partition(): anti-rollback check again (§7.3) */
        efuse_sv = efuse_secure_version(w->efuse);
        if (w->info.desc.secure_version < efuse_sv)
                return writer_invalidate(w, -ESP_ERR_OTA_SMALL_SEC_VER, err, errlen,
                                         "New firmware security version is less than eFuse programmed");

        k = boot_set_boot_slot(w->flash, w->table, w->target_slot);
        if (k < 0)
                return writer_fail(w, k, err, errlen, "cannot write otadata: %s", esp_err_to_name(k));
        w->boot_set = true;
        return 0;
}

int ota_writer_abort(OtaWriter *w) {
        int k = 0;

        if (!w)
                return -EINVAL;
        if (w->boot_set)
                return 0;
        if (w->dirty)
                k = flash_region_erase(&w->target, 0, FLASH_SECTOR_SIZE);
        if (w->phase != OTA_WRITER_FAILED) {
                w->phase = OTA_WRITER_FAILED;
                w->error = -ESP_ERR_INVALID_STATE;
                snprintf(w->error_message, sizeof w->error_message, "the update was aborted");
        }
        return k;
}

bool ota_writer_have_desc(const OtaWriter *w) {
        return w && (w->phase == OTA_WRITER_BODY || w->phase == OTA_WRITER_FINISHED);
}

const AppDesc *ota_writer_desc(const OtaWriter *w) {
        return ota_writer_have_desc(w) ? app_image_verifier_desc(w->verifier) : NULL;
}

uint16_t ota_writer_image_chip_id(const OtaWriter *w) {
        const AppImageHeader *h = w ? app_image_verifier_header(w->verifier) : NULL;
        return h ? h->chip_id : 0xFFFF;
}

uint64_t ota_writer_written(const OtaWriter *w) {
        return w ? w->written : 0;
}

uint64_t ota_writer_flashed(const OtaWriter *w) {
        return w ? w->flashed : 0;
}

unsigned ota_writer_target_slot(const OtaWriter *w) {
        return w ? w->target_slot : 0;
}

uint64_t ota_writer_image_len(const OtaWriter *w) {
        return w ? app_image_verifier_image_len(w->verifier) : 0;
}
