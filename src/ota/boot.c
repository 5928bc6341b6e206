/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_OTA

#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "dsemu/efuse.h"
#include "image/app-image.h"
#include "image/sbv2.h"
#include "ota/boot-cache.h"
#include "ota/boot.h"

#define BOOT_READ_CHUNK (32u * 1024u)
#define FACTORY_INDEX (-1)

/* The app partitions and otadata of a table (bootloader_state_t). */
typedef struct BootLayout {
        FlashRegion otadata;
        bool has_otadata;
        FlashRegion slots[BOOT_MAX_SLOTS];
        unsigned n_slots;
        FlashRegion factory;
        bool has_factory;
} BootLayout;

typedef struct BootLog {
        char **lines;
        size_t n;
        uint64_t ms;
} BootLog;

static void boot_log(BootLog *l, char level, const char *tag, const char *fmt, ...) _printf_(4, 5);
static void boot_log(BootLog *l, char level, const char *tag, const char *fmt, ...) {
        char msg[256], *line = NULL, **n;
        va_list ap;

        if (!l)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        l->ms += 4;
        if (asprintf(&line, "%c (%" PRIu64 ") %s: %s", level, l->ms, tag, msg) < 0)
                return;
        n = reallocarray(l->lines, l->n + 2, sizeof *n);
        if (!n) {
                free(line);
                return;
        }
        n[l->n++] = line;
        n[l->n] = NULL;
        l->lines = n;
        log_debug("%s", line);
}

void boot_result_done(BootResult *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n_log; i++)
                free(r->log[i]);
        free(r->log);
        *r = (BootResult) { .app.slot = -1 };
}

static int boot_layout(Flash *flash, const PartitionTable *table, BootLayout *ret) {
        const Partition *p;
        BootLayout l = {};

        if (!flash || !table)
                return -ESP_ERR_INVALID_ARG;

        p = partition_table_find(table, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_OTA);
        if (p) {
                l.otadata = partition_region(flash, p);
                l.has_otadata = true;
        }
        l.n_slots = MIN(partition_table_ota_count(table), (unsigned) BOOT_MAX_SLOTS);
        for (unsigned i = 0; i < l.n_slots; i++)
                l.slots[i] = partition_region(flash, partition_table_find_ota(table, i));
        p = partition_table_find(table, PARTITION_TYPE_APP, PARTITION_SUBTYPE_APP_FACTORY);
        if (p) {
                l.factory = partition_region(flash, p);
                l.has_factory = true;
        }
        if (l.n_slots == 0 && !l.has_factory)
                return -ESP_ERR_INVALID_ARG;
        *ret = l;
        return 0;
}

/* Where the Secure Boot V2 sector of the image in `r` starts, from the
 * segment headers alone (no hashing): §5.2 layout. */
static int image_signed_len(const FlashRegion *r, uint32_t *ret) {
        uint8_t h[APP_IMAGE_HEADER_LEN], sh[APP_IMAGE_SEGMENT_HEADER_LEN];
        uint64_t off = APP_IMAGE_HEADER_LEN, image_len;
        int k;

        k = flash_region_read(r, 0, h, sizeof h);
        if (k < 0)
                return k;
        if (h[0] != APP_IMAGE_MAGIC || h[1] == 0 || h[1] > APP_IMAGE_MAX_SEGMENTS)
                return -ESP_ERR_IMAGE_INVALID;
        for (unsigned i = 0; i < h[1]; i++) {
                if (off + sizeof sh > r->size)
                        return -ESP_ERR_IMAGE_INVALID;
                k = flash_region_read(r, (uint32_t) off, sh, sizeof sh);
                if (k < 0)
                        return k;
                off += sizeof sh + le32_read(sh + 4);
        }
        image_len = ALIGN_TO(off + 1, 16) + (h[23] == 1 ? APP_IMAGE_HASH_LEN : 0);
        if (ALIGN_TO(image_len, SBV2_SECTOR_SIZE) + SBV2_SECTOR_SIZE > r->size)
                return -ESP_ERR_IMAGE_INVALID;
        *ret = (uint32_t) ALIGN_TO(image_len, SBV2_SECTOR_SIZE);
        return 0;
}

/* Key digest of the first signature block of the app in `r` (§6.2). */
static int slot_first_key_digest(const FlashRegion *r, uint8_t ret[32]) {
        _cleanup_free_ uint8_t *sector = NULL;
        uint32_t signed_len;
        int k;

        k = image_signed_len(r, &signed_len);
        if (k < 0)
                return k;
        sector = malloc(SBV2_SECTOR_SIZE);
        if (!sector)
                return -ENOMEM;
        k = flash_region_read(r, signed_len, sector, SBV2_SECTOR_SIZE);
        if (k < 0)
                return k;
        return sbv2_sector_first_key_digest(sector, SBV2_SECTOR_SIZE, ret, NULL, 0);
}

/* The secure_version of the app in `r`, from its descriptor only (the
 * anti-rollback pre-check of the selection, §7.3). */
static int slot_secure_version(const FlashRegion *r, uint32_t *ret) {
        uint8_t d[APP_DESC_OFFSET + 8];
        int k;

        k = flash_region_read(r, 0, d, sizeof d);
        if (k < 0)
                return k;
        if (d[0] != APP_IMAGE_MAGIC || le32_read(d + APP_DESC_OFFSET) != APP_DESC_MAGIC)
                return -ESP_ERR_IMAGE_INVALID;
        *ret = le32_read(d + APP_DESC_OFFSET + 4);
        return 0;
}

typedef struct TrustCtx {
        bool signed_apps;          /* §6.2 mode */
        bool has_key;
        uint8_t key[32];
} TrustCtx;

/* Streams the image in `r` through the verifier (§7.2 step 3: it is read
 * once) and fills *ret with what the verifier concluded. With `keep`, the
 * bytes are read into one buffer that is handed back in *keep (*keep_len
 * bytes, exactly those fed), for the boot cache. *ret_v is the verifier
 * (it holds the signature sector). */
static int image_stream(const FlashRegion *r, BootImageFacts *ret, AppImageVerifier **ret_v, uint8_t **keep,
                        size_t *keep_len, BootLog *log, char *err, size_t errlen) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;
        _cleanup_free_ uint8_t *chunk = NULL, *kept = NULL;
        BootImageFacts f = {};
        size_t kept_size = 0;
        const uint8_t *sector;
        uint64_t fed = 0;
        int k;

        if (!keep) {
                chunk = malloc(BOOT_READ_CHUNK);
                if (!chunk)
                        return -ENOMEM;
        }
        k = app_image_verifier_new(r->size, &v);
        if (k < 0)
                return k;

        for (;;) {
                size_t image_len = app_image_verifier_image_len(v);
                uint64_t want = image_len > 0 ? MIN((uint64_t) ALIGN_TO(image_len, SBV2_SECTOR_SIZE) + SBV2_SECTOR_SIZE,
                                                    (uint64_t) r->size)
                                              : r->size;
                uint8_t *buf = chunk;
                size_t n;

                if (fed >= want)
                        break;
                n = (size_t) MIN((uint64_t) BOOT_READ_CHUNK, want - fed);
                if (image_len == 0 && fed == 0)
                        n = MIN(n, (size_t) APP_IMAGE_PEEK_LEN);   /* blank slots cost one small read */
                if (keep) {
                        if (fed + n > kept_size) {
                                size_t size = (size_t) MIN(MAX(fed + n, (uint64_t) kept_size * 2), want);
                                uint8_t *p = realloc(kept, size);

                                if (!p)
                                        return -ENOMEM;
                                kept = p;
                                kept_size = size;
                        }
                        buf = kept + fed;
                }
                k = flash_region_read(r, (uint32_t) fed, buf, n);
                if (k < 0)
                        return k;
                k = app_image_verifier_feed(v, buf, n, err, errlen);
                if (k < 0)
                        return k;
                fed += n;
                f.read_ms += n / (256u * 1024u);   /* the flash cache reads ~256 KiB per ms */
                if (log)
                        log->ms += n / (256u * 1024u);
        }

        k = app_image_verifier_finish(v, &f.info, err, errlen);
        if (k < 0)
                return k;
        sector = f.info.has_signature_sector ? app_image_verifier_signature_sector(v) : NULL;
        if (sector && sbv2_sector_first_key_digest(sector, SBV2_SECTOR_SIZE, f.key_digest, NULL, 0) >= 0)
                f.has_key_digest = true;

        *ret = f;
        *ret_v = TAKE_PTR(v);
        if (keep) {
                *keep = TAKE_PTR(kept);
                *keep_len = (size_t) fed;
        }
        return 0;
}

/* sbv2_verify_sector(), answered by the cache entry when there is one.
 * *ret_block: the block that verified, when the check ran here. */
static int check_sector(BootCacheEntry *e, const uint8_t *sector, const uint8_t digest[32],
                        const uint8_t (*trusted)[32], size_t n, int *ret_block, char *err, size_t errlen) {
        unsigned block;
        int k;

        if (e)
                return boot_cache_entry_verify_sector(e, trusted, n, err, errlen);
        k = sbv2_verify_sector(sector, SBV2_SECTOR_SIZE, digest, trusted, n, &block, err, errlen);
        if (k < 0)
                return k;
        *ret_block = (int) block;
        return 0;
}

/* The checks that depend on this device, on facts of the image (freshly
 * streamed, or from the cache entry `e`): chip, secure version, signature. */
static int check_image(const FlashRegion *r, const BootImageFacts *f, const uint8_t *sector, BootCacheEntry *e,
                       const Efuse *efuse, const TrustCtx *trust, BootApp *ret, int *ret_block, BootLog *log,
                       char *err, size_t errlen) {
        const AppImageInfo *info = &f->info;
        int k, chip_id;
        unsigned efuse_sv;

        chip_id = esp_chip_image_id(efuse_chip(efuse));
        if (chip_id >= 0 && info->header.chip_id != chip_id) {
                snprintf(err, errlen, "mismatch chip ID, expected %d, found %u", chip_id, info->header.chip_id);
                return -ESP_ERR_IMAGE_INVALID;
        }

        efuse_sv = efuse_secure_version(efuse);
        if (info->desc.secure_version < efuse_sv) {
                snprintf(err, errlen, "secure_version %" PRIu32 " is below the eFuse SECURE_VERSION %u (anti-rollback)",
                         info->desc.secure_version, efuse_sv);
                return -ESP_ERR_OTA_SMALL_SEC_VER;
        }

        *ret = (BootApp) {
                .slot = -1,
                .region = *r,
                .desc = info->desc,
                .behaviour = info->behaviour,
                .ota_state = OTA_IMG_UNDEFINED,
                .has_key_digest = f->has_key_digest,
        };
        memcpy(ret->key_digest, f->key_digest, sizeof ret->key_digest);

        if (efuse_secure_boot_enabled(efuse)) {
                uint8_t digests[3][32], trusted[3][32];
                bool present[3];
                size_t n = 0;

                k = efuse_secure_boot_digests(efuse, digests, present);
                if (k < 0)
                        return k;
                for (unsigned i = 0; i < 3; i++)
                        if (present[i])
                                memcpy(trusted[n++], digests[i], 32);
                if (!sector) {
                        snprintf(err, errlen, "secure boot is enabled and the image has no signature sector");
                        return -EBADMSG;
                }
                k = check_sector(e, sector, info->signed_digest, (const uint8_t (*)[32]) trusted, n, ret_block, err,
                                 errlen);
                if (k < 0)
                        return k;
                boot_log(log, 'I', "secure_boot_v2", "Signature verified successfully!");
        } else if (trust && trust->signed_apps) {
                const uint8_t (*key)[32] = trust->has_key ? (const uint8_t (*)[32]) trust->key
                                                          : (const uint8_t (*)[32]) ret->key_digest;

                if (!sector || !ret->has_key_digest) {
                        snprintf(err, errlen, "signed apps are required and the image is not signed");
                        return -EBADMSG;
                }
                k = check_sector(e, sector, info->signed_digest, key, 1, ret_block, err, errlen);
                if (k < 0)
                        return k;
                boot_log(log, 'I', "secure_boot_v2", "Signature verified successfully!");
        }
        return 0;
}

/* Reads the image once (streamed through the verifier), then checks chip,
 * secure version and signature. With a cache, an image whose bytes equal a
 * cached one is not read through the verifier again: only the checks above
 * run, on the cached facts; an image that passes them all is cached. */
static int verify_region(const FlashRegion *r, const Efuse *efuse, const TrustCtx *trust, BootCache *cache,
                         BootApp *ret, BootLog *log, char *err, size_t errlen) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;
        _cleanup_free_ uint8_t *keep = NULL;
        BootCacheEntry *e = NULL;
        const uint8_t *sector;
        BootImageFacts facts;
        size_t keep_len = 0;
        int k, block = -1;

        /* a flash error while looking up counts as a miss: the stream meets it again */
        if (cache && boot_cache_lookup(cache, r, &e) > 0) {
                facts = *boot_cache_entry_facts(e);
                sector = boot_cache_entry_sector(e);
                if (log)
                        log->ms += facts.read_ms;
        } else {
                e = NULL;
                k = image_stream(r, &facts, &v, cache ? &keep : NULL, &keep_len, log, err, errlen);
                if (k < 0)
                        return k;
                sector = facts.info.has_signature_sector ? app_image_verifier_signature_sector(v) : NULL;
        }

        k = check_image(r, &facts, sector, e, efuse, trust, ret, &block, log, err, errlen);
        if (k < 0)
                return k;

        /* best effort: an image that does not fit under the cap is just not cached */
        if (keep && boot_cache_add(cache, r->size, &keep, keep_len, &facts, &e) > 0 && block >= 0)
                boot_cache_entry_note_verified(e, (unsigned) block);
        return 0;
}

static FlashRegion *layout_region(BootLayout *l, int index) {
        if (index == FACTORY_INDEX)
                return l->has_factory ? &l->factory : NULL;
        if (index < 0 || (unsigned) index >= l->n_slots)
                return NULL;
        return &l->slots[index];
}

static int trust_for_boot(BootLayout *l, const Otadata *d, const BootOptions *o, TrustCtx *ret) {
        *ret = (TrustCtx) { .signed_apps = o && o->signed_apps_no_secure_boot };
        if (!ret->signed_apps)
                return 0;
        if (o->has_trusted_key_digest) {
                memcpy(ret->key, o->trusted_key_digest, 32);
                ret->has_key = true;
                return 0;
        }
        /* the previous app: the VALID entry with the larger seq */
        int best = -1;
        for (int i = 0; i < 2; i++)
                if (d && d->valid[i] && d->entry[i].ota_state == OTA_IMG_VALID &&
                    (best < 0 || d->entry[i].ota_seq > d->entry[best].ota_seq))
                        best = i;
        if (best >= 0 && l->n_slots > 0) {
                FlashRegion *r = &l->slots[(d->entry[best].ota_seq - 1) % l->n_slots];
                if (slot_first_key_digest(r, ret->key) >= 0)
                        ret->has_key = true;
        }
        return 0;
}

static void log_partition(BootLog *log, int index, const FlashRegion *r) {
        if (index == FACTORY_INDEX)
                boot_log(log, 'I', "boot", "Loaded app from partition at offset 0x%" PRIx32 " (factory)", r->offset);
        else
                boot_log(log, 'I', "boot", "Loaded app from partition at offset 0x%" PRIx32, r->offset);
}

/* try_load_partition(): true when the app in `index` boots. */
static bool try_load(BootLayout *l, int index, const Efuse *efuse, const TrustCtx *trust, BootCache *cache,
                     BootApp *app, BootLog *log, bool *ret_boot_fail) {
        FlashRegion *r = layout_region(l, index);
        char err[256] = "";
        int k;

        *ret_boot_fail = false;
        if (!r)
                return false;
        k = verify_region(r, efuse, trust, cache, app, log, err, sizeof err);
        if (k < 0) {
                if (k == -ESP_ERR_OTA_SMALL_SEC_VER)
                        boot_log(log, 'W', "boot", "Skipping partition at offset 0x%" PRIx32 ": %s", r->offset, err);
                else if (k == -EBADMSG || k == -ENOKEY)
                        boot_log(log, 'E', "secure_boot_v2", "Secure Boot V2 verification failed: %s",
                                 err[0] ? err : esp_err_to_name(k));
                else
                        boot_log(log, 'E', "esp_image", "image at 0x%" PRIx32 " is not valid: %s", r->offset,
                                 err[0] ? err : esp_err_to_name(k));
                if (index == FACTORY_INDEX)
                        boot_log(log, 'E', "boot", "Factory app partition is not bootable");
                else
                        boot_log(log, 'E', "boot", "OTA app partition slot %d is not bootable", index);
                return false;
        }
        app->slot = index;
        if (app->behaviour == APP_BEHAVIOUR_BOOT_FAIL) {
                log_partition(log, index, r);
                boot_log(log, 'E', "boot", "App '%s' in slot %d crashed during start-up (boot-fail firmware), "
                         "rolling back", app->desc.version, index);
                *ret_boot_fail = true;
                return false;
        }
        log_partition(log, index, r);
        boot_log(log, 'I', "boot", "App version: %s (secure_version %" PRIu32 ", project '%s')", app->desc.version,
                 app->desc.secure_version, app->desc.project_name);
        return true;
}

int boot_run(Flash *flash, const PartitionTable *table, Efuse *efuse, const BootOptions *o, BootResult *ret) {
        BootLayout l;
        Otadata d = {};
        BootLog log = { .ms = o && o->start_ms ? o->start_ms : 25 };
        BootResult res = { .app.slot = -1 };
        TrustCtx trust;
        int k, start_index, active = -1, booted = -2;
        bool initial = false;
        unsigned hw_sv;

        if (!flash || !table || !efuse || !ret)
                return -EINVAL;
        k = boot_layout(flash, table, &l);
        if (k < 0)
                return k;

        boot_log(&log, 'I', "boot", "ESP-IDF " APP_IDF_VERSION " 2nd stage bootloader (espfleet emulation)");
        boot_log(&log, 'I', "boot", "chip: %s, secure boot: %s, anti-rollback SECURE_VERSION: %u",
                 esp_chip_to_string(efuse_chip(efuse)), efuse_secure_boot_enabled(efuse) ? "on" : "off",
                 efuse_secure_version(efuse));

        hw_sv = efuse_secure_version(efuse);
        if (l.has_otadata) {
                k = otadata_read(&l.otadata, &d);
                if (k < 0)
                        goto fail;
                /* §7.2 step 5: the previous boot never confirmed a PENDING_VERIFY app */
                for (int i = 0; i < 2; i++)
                        if (d.entry[i].ota_seq != OTADATA_SEQ_BLANK && d.entry[i].ota_state == OTA_IMG_PENDING_VERIFY)
                                boot_log(&log, 'W', "boot", "otadata[%d]: app in slot %u was not confirmed, "
                                         "marking it ABORTED (rollback)", i,
                                         l.n_slots ? (d.entry[i].ota_seq - 1) % l.n_slots : 0);
                k = otadata_abort_pending(&l.otadata);
                if (k < 0)
                        goto fail;
                k = otadata_read(&l.otadata, &d);
                if (k < 0)
                        goto fail;

                /* §7.3: the valid entry with the larger seq whose app passes the secure_version test */
                int order[2] = { 0, 1 };
                if (d.valid[1] && (!d.valid[0] || d.entry[1].ota_seq > d.entry[0].ota_seq)) {
                        order[0] = 1;
                        order[1] = 0;
                }
                for (int j = 0; j < 2 && l.n_slots > 0; j++) {
                        int i = order[j];
                        uint32_t sv = 0;
                        unsigned slot;

                        if (!d.valid[i])
                                continue;
                        slot = (d.entry[i].ota_seq - 1) % l.n_slots;
                        if (slot_secure_version(&l.slots[slot], &sv) >= 0 && sv < hw_sv) {
                                boot_log(&log, 'W', "boot", "otadata[%d] selects slot %u, whose secure_version %" PRIu32
                                         " is below the eFuse value %u: skipped (anti-rollback)", i, slot, sv, hw_sv);
                                continue;
                        }
                        active = i;
                        break;
                }
        }

        if (active < 0) {
                if (l.has_factory)
                        start_index = FACTORY_INDEX;
                else {
                        start_index = 0;
                        initial = d.active < 0;   /* blank otadata: write entry 0 after a successful load */
                        if (initial)
                                boot_log(&log, 'I', "boot", "otadata is empty: booting ota_0");
                }
        } else {
                start_index = (int) ((d.entry[active].ota_seq - 1) % l.n_slots);
                boot_log(&log, 'I', "boot", "otadata[%d]: seq %" PRIu32 ", state %s, selects slot %d", active,
                         d.entry[active].ota_seq, strna(ota_img_state_to_string(d.entry[active].ota_state)),
                         start_index);
                if (d.entry[active].ota_state == OTA_IMG_NEW) {
                        d.entry[active].ota_state = OTA_IMG_PENDING_VERIFY;
                        k = otadata_write_entry(&l.otadata, (unsigned) active, &d.entry[active]);
                        if (k < 0)
                                goto fail;
                        boot_log(&log, 'I', "boot", "otadata[%d]: new app, marked PENDING_VERIFY", active);
                }
        }

        trust_for_boot(&l, l.has_otadata ? &d : NULL, o, &trust);

        /* §7.2 step 4: backwards from the selected slot to factory, then forwards */
        for (int pass = 0; pass < 2 && booted == -2; pass++) {
                int from = pass == 0 ? start_index : start_index + 1;
                int to = pass == 0 ? FACTORY_INDEX : (int) l.n_slots - 1;
                int step = pass == 0 ? -1 : 1;

                for (int index = from; pass == 0 ? index >= to : index <= to; index += step) {
                        BootApp app = {};
                        bool boot_fail;

                        if (!layout_region(&l, index))
                                continue;
                        if (try_load(&l, index, efuse, &trust, o ? o->cache : NULL, &app, &log, &boot_fail)) {
                                res.app = app;
                                booted = index;
                                break;
                        }
                        if (index == start_index && active >= 0 &&
                            d.entry[active].ota_state == OTA_IMG_PENDING_VERIFY) {
                                /* what the next boot would do after the failed start: abort it */
                                d.entry[active].ota_state = OTA_IMG_ABORTED;
                                k = otadata_write_entry(&l.otadata, (unsigned) active, &d.entry[active]);
                                if (k < 0)
                                        goto fail;
                                boot_log(&log, 'W', "boot", "otadata[%d]: marked ABORTED, falling back (rollback)",
                                         active);
                                res.rolled_back = true;
                        } else if (index == start_index && boot_fail && active >= 0) {
                                d.entry[active].ota_state = OTA_IMG_ABORTED;
                                k = otadata_write_entry(&l.otadata, (unsigned) active, &d.entry[active]);
                                if (k < 0)
                                        goto fail;
                                res.rolled_back = true;
                        } else if (index == start_index)
                                res.rolled_back = true;
                }
        }

        if (booted == -2) {
                boot_log(&log, 'E', "boot", "No bootable app partitions in the partition table");
                k = -ESP_ERR_NOT_FOUND;
                goto fail;
        }

        if (booted != FACTORY_INDEX && l.has_otadata) {
                if (initial) {
                        OtaSelectEntry e;

                        memset(&e, 0xFF, sizeof e);
                        e.ota_seq = (uint32_t) booted + 1;
                        e.ota_state = OTA_IMG_VALID;
                        k = otadata_write_entry(&l.otadata, 0, &e);
                        if (k < 0)
                                goto fail;
                        boot_log(&log, 'I', "boot", "otadata[0]: seq %d, state VALID (first boot)", booted + 1);
                }
                k = otadata_read(&l.otadata, &d);
                if (k < 0)
                        goto fail;
                if (d.active >= 0 && (d.entry[d.active].ota_seq - 1) % l.n_slots == (unsigned) booted) {
                        res.app.ota_state = d.entry[d.active].ota_state;
                        /* §7.3: booting a VALID app raises the eFuse to its secure_version */
                        if (res.app.ota_state == OTA_IMG_VALID && res.app.desc.secure_version > hw_sv) {
                                k = efuse_burn_secure_version(efuse, res.app.desc.secure_version);
                                if (k < 0)
                                        boot_log(&log, 'E', "efuse", "Failed to raise SECURE_VERSION to %" PRIu32 ": %s",
                                                 res.app.desc.secure_version, esp_err_to_name(k));
                                else {
                                        res.efuse_changed = true;
                                        boot_log(&log, 'I', "boot", "Anti-rollback: SECURE_VERSION raised from %u to %" PRIu32,
                                                 hw_sv, res.app.desc.secure_version);
                                }
                        }
                } else
                        res.app.ota_state = OTA_IMG_UNDEFINED;
        }

        boot_log(&log, 'I', "boot", "Disabling RNG early entropy source...");
        res.log = log.lines;
        res.n_log = log.n;
        *ret = res;
        return 0;

fail:
        res.app.slot = -1;
        res.log = log.lines;
        res.n_log = log.n;
        *ret = res;
        return k;
}

int boot_get_slot_state(Flash *flash, const PartitionTable *table, unsigned slot, uint32_t *ret) {
        BootLayout l;
        Otadata d;
        int k;

        k = boot_layout(flash, table, &l);
        if (k < 0)
                return k;
        *ret = OTA_IMG_UNDEFINED;
        if (!l.has_otadata || l.n_slots == 0)
                return 0;
        k = otadata_read(&l.otadata, &d);
        if (k < 0)
                return k;
        if (d.active >= 0 && (d.entry[d.active].ota_seq - 1) % l.n_slots == slot)
                *ret = d.entry[d.active].ota_state;
        return 0;
}

int boot_mark_app_valid(Flash *flash, const PartitionTable *table, Efuse *efuse, const BootApp *running,
                        bool *efuse_changed) {
        uint32_t state;
        BootLayout l;
        int k;

        if (efuse_changed)
                *efuse_changed = false;
        if (!running || running->slot < 0)
                return -ESP_ERR_INVALID_ARG;
        k = boot_layout(flash, table, &l);
        if (k < 0)
                return k;
        if (!l.has_otadata)
                return -ESP_ERR_NOT_FOUND;
        k = boot_get_slot_state(flash, table, (unsigned) running->slot, &state);
        if (k < 0)
                return k;
        if (state == OTA_IMG_PENDING_VERIFY || state == OTA_IMG_NEW) {
                k = otadata_set_state(&l.otadata, OTA_IMG_VALID);
                if (k < 0)
                        return k;
        }
        if (efuse && running->desc.secure_version > efuse_secure_version(efuse)) {
                k = efuse_burn_secure_version(efuse, running->desc.secure_version);
                if (k < 0)
                        return k;
                if (efuse_changed)
                        *efuse_changed = true;
        }
        return 0;
}

int boot_verify_slot(Flash *flash, const PartitionTable *table, const Efuse *efuse, const BootOptions *o,
                     unsigned slot, BootApp *ret, char *err, size_t errlen) {
        BootLayout l;
        Otadata d, *dp = NULL;
        TrustCtx trust;
        BootApp app;
        char dummy[8];
        int k;

        if (!err) {
                err = dummy;
                errlen = sizeof dummy;
        }
        err[0] = 0;
        k = boot_layout(flash, table, &l);
        if (k < 0)
                return k;
        if (slot >= l.n_slots)
                return -ESP_ERR_NOT_FOUND;
        if (l.has_otadata && otadata_read(&l.otadata, &d) >= 0)
                dp = &d;
        trust_for_boot(&l, dp, o, &trust);
        k = verify_region(&l.slots[slot], efuse, &trust, o ? o->cache : NULL, &app, NULL, err, errlen);
        if (k < 0)
                return k;
        app.slot = (int) slot;
        if (ret)
                *ret = app;
        return 0;
}

int boot_mark_app_invalid_rollback(Flash *flash, const PartitionTable *table, Efuse *efuse,
                                   const BootApp *running, const BootOptions *o) {
        BootOptions opts = o ? *o : (BootOptions) {};
        bool other = false;
        BootLayout l;
        int k;

        if (!running || running->slot < 0)
                return -ESP_ERR_INVALID_ARG;
        k = boot_layout(flash, table, &l);
        if (k < 0)
                return k;
        if (!l.has_otadata)
                return -ESP_ERR_NOT_FOUND;

        /* is there anything else to boot? (esp_ota_mark_app_invalid_rollback_and_reboot
         * checks esp_ota_check_rollback_is_possible) */
        if (running->has_key_digest && opts.signed_apps_no_secure_boot && !opts.has_trusted_key_digest) {
                memcpy(opts.trusted_key_digest, running->key_digest, 32);
                opts.has_trusted_key_digest = true;
        }
        for (unsigned i = 0; i < l.n_slots && !other; i++)
                if ((int) i != running->slot && boot_verify_slot(flash, table, efuse, &opts, i, NULL, NULL, 0) >= 0)
                        other = true;
        if (!other && l.has_factory) {
                BootApp app;
                TrustCtx trust = {};
                char err[64];
                other = verify_region(&l.factory, efuse, &trust, opts.cache, &app, NULL, err, sizeof err) >= 0;
        }
        if (!other)
                return -ESP_ERR_OTA_ROLLBACK_FAILED;

        return otadata_set_state(&l.otadata, OTA_IMG_INVALID);
}

/* The layout for writing otadata that selects `slot`. */
static int boot_layout_otadata_slot(Flash *flash, const PartitionTable *table, unsigned slot, BootLayout *l) {
        int k = boot_layout(flash, table, l);
        if (k < 0)
                return k;
        if (!l->has_otadata)
                return -ESP_ERR_NOT_FOUND;
        if (slot >= l->n_slots)
                return -ESP_ERR_INVALID_ARG;
        return 0;
}

int boot_set_boot_slot(Flash *flash, const PartitionTable *table, unsigned slot) {
        BootLayout l;
        int k;

        k = boot_layout_otadata_slot(flash, table, slot, &l);
        if (k < 0)
                return k;
        return otadata_set_boot_slot(&l.otadata, l.n_slots, slot, true);
}

int boot_init_otadata(Flash *flash, const PartitionTable *table, unsigned slot, uint32_t state) {
        OtaSelectEntry e;
        BootLayout l;
        int k;

        k = boot_layout_otadata_slot(flash, table, slot, &l);
        if (k < 0)
                return k;
        k = otadata_erase(&l.otadata);
        if (k < 0)
                return k;
        memset(&e, 0xFF, sizeof e);
        e.ota_seq = slot + 1;
        e.ota_state = state;
        return otadata_write_entry(&l.otadata, 0, &e);
}
