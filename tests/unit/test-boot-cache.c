/* SPDX-License-Identifier: MIT */
/* The boot verification cache (issue #16 §5): an identical image is not
 * verified twice, and the cache never changes a verdict or a log line. */

#include "ota-fixture.h"
#include "basic/crc.h"
#include "ota/boot-cache.h"

#define N_DEVS 4

static Dev devs[N_DEVS];
static BootCache *cache;

static void setup(void) {
        for (unsigned i = 0; i < N_DEVS; i++)
                dev_open(&devs[i], true);
        cr_assert_eq(boot_cache_new(0, 0, &cache), 0);
}

static void teardown(void) {
        for (unsigned i = 0; i < N_DEVS; i++)
                dev_close(&devs[i]);
        cache = boot_cache_free(cache);
}

TestSuite(boot_cache, .init = setup, .fini = teardown, .timeout = 120);

/* An eFuse for `d`: secure boot with DIGEST0 = `digest`, or off when NULL. */
static void dev_efuse(Dev *d, EspChip chip, const uint8_t *digest) {
        Efuse *e;

        cr_assert_eq(efuse_new(chip, &e), 0);
        if (digest) {
                cr_assert_eq(efuse_burn_key(e, 0, digest, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0, false), 0);
                cr_assert_eq(efuse_burn_field(e, "SECURE_BOOT_EN", 1), 0);
        }
        efuse_free(d->efuse);
        d->efuse = e;
}

static int boot_with(Dev *d, BootCache *c, BootResult *r) {
        BootOptions o = { .cache = c };
        return boot_run(d->flash, d->table, d->efuse, &o, r);
}

static void assert_same_result(int ka, const BootResult *a, int kb, const BootResult *b) {
        cr_assert_eq(ka, kb, "%s vs %s", esp_err_to_name(ka), esp_err_to_name(kb));
        cr_assert_eq(a->app.slot, b->app.slot);
        cr_assert_eq(a->app.region.offset, b->app.region.offset);
        cr_assert_eq(a->app.region.size, b->app.region.size);
        cr_assert_eq(memcmp(&a->app.desc, &b->app.desc, sizeof a->app.desc), 0);
        cr_assert_eq(a->app.behaviour, b->app.behaviour);
        cr_assert_eq(a->app.ota_state, b->app.ota_state);
        cr_assert_eq(a->app.has_key_digest, b->app.has_key_digest);
        cr_assert_arr_eq(a->app.key_digest, b->app.key_digest, 32);
        cr_assert_eq(a->rolled_back, b->rolled_back);
        cr_assert_eq(a->efuse_changed, b->efuse_changed);
        cr_assert_eq(a->n_log, b->n_log);
        for (size_t i = 0; i < a->n_log; i++)
                cr_assert_str_eq(a->log[i], b->log[i]);
}

/* Boots devs[i] with the cache and devs[i + 1] (same flash bytes, same
 * eFuse) without, and checks both say the same. Returns the verdict. */
static int boot_both(unsigned i, BootResult *ret) {
        BootResult plain = {};
        int k, k_plain;

        k = boot_with(&devs[i], cache, ret);
        k_plain = boot_with(&devs[i + 1], NULL, &plain);
        if (k != k_plain) {
                log_dump(ret);
                log_dump(&plain);
        }
        assert_same_result(k, ret, k_plain, &plain);
        boot_result_done(&plain);
        return k;
}

static void put_all(const uint8_t *img, size_t len) {
        for (unsigned i = 0; i < N_DEVS; i++)
                put_bytes(&devs[i], 0, img, len);
}

Test(boot_cache, hit_on_identical_image_in_another_flash) {
        _cleanup_free_ uint8_t *img = NULL;
        BootResult r = {};
        size_t len;

        /* signing is randomised: one build, the same bytes in every flash */
        make_image(&(ImageSpec) { .version = "1.0.0", .key = key_a }, &img, &len);
        put_all(img, len);

        cr_assert_eq(boot_both(0, &r), 0);
        cr_assert_eq(boot_cache_misses(cache), 1);
        cr_assert_eq(boot_cache_hits(cache), 0);
        cr_assert_eq(boot_cache_n_entries(cache), 1);
        cr_assert(log_has(&r, "Signature verified successfully!"));
        boot_result_done(&r);

        cr_assert_eq(boot_both(2, &r), 0);
        cr_assert_eq(boot_cache_hits(cache), 1);
        cr_assert_eq(boot_cache_misses(cache), 1);
        cr_assert_eq(r.app.slot, 0);
        cr_assert_str_eq(r.app.desc.version, "1.0.0");
        cr_assert_arr_eq(r.app.key_digest, digest_a, 32);
        cr_assert(log_has(&r, "Signature verified successfully!"));
        boot_result_done(&r);

        /* the device that missed boots again (otadata now VALID) from the cache */
        cr_assert_eq(boot_with(&devs[0], cache, &r), 0);
        cr_assert_eq(boot_cache_hits(cache), 2);
        boot_result_done(&r);
}

Test(boot_cache, one_byte_different_is_a_miss_and_refused_as_without_cache) {
        _cleanup_free_ uint8_t *img = NULL;
        BootResult r = {};
        size_t len;
        static const struct {
                const char *what;
                size_t offset;          /* from the start, or (when from_sector) from the signature sector */
                bool from_sector;
                bool fix_crc;           /* reseal the block, so that the signature itself is what fails */
                int expect;
                const char *log;
        } cases[] = {
                { "body byte", APP_MARKER_OFFSET + APP_MARKER_LEN + 40, false, false, -ESP_ERR_NOT_FOUND, "esp_image" },
                { "ECDSA r, block resealed", 110, true, true, -ESP_ERR_NOT_FOUND, "Secure Boot V2 verification failed" },
                { "signed image digest, block resealed", 4, true, true, -ESP_ERR_NOT_FOUND, "esp_image" },
                { "block padding (CRC mismatch)", 600, true, false, -ESP_ERR_NOT_FOUND, "CRC" },
                /* not covered by any block: a different image that still boots, so a miss that verifies */
                { "sector padding after the block", SBV2_BLOCK_SIZE + 100, true, false, 0, "Signature verified" },
        };

        make_image(&(ImageSpec) { .version = "1.0.0", .key = key_a }, &img, &len);
        put_all(img, len);
        cr_assert_eq(boot_both(0, &r), 0);
        boot_result_done(&r);

        for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
                _cleanup_free_ uint8_t *bad = malloc(len);
                uint64_t misses = boot_cache_misses(cache), hits = boot_cache_hits(cache);
                size_t n = boot_cache_n_entries(cache);
                size_t off = cases[c].offset + (cases[c].from_sector ? len - SBV2_SECTOR_SIZE : 0);

                cr_assert_not_null(bad);
                memcpy(bad, img, len);
                cr_assert_lt(off, len);
                bad[off] ^= 0x01;
                if (cases[c].fix_crc) {
                        uint8_t *block = bad + len - SBV2_SECTOR_SIZE;
                        le32_write(block + SBV2_CRC_OFFSET, std_crc32(block, SBV2_CRC_OFFSET));
                }
                put_bytes(&devs[2], 0, bad, len);
                put_bytes(&devs[3], 0, bad, len);
                cr_assert_eq(boot_init_otadata(devs[2].flash, devs[2].table, 0, OTA_IMG_VALID), 0);
                cr_assert_eq(boot_init_otadata(devs[3].flash, devs[3].table, 0, OTA_IMG_VALID), 0);

                cr_assert_eq(boot_both(2, &r), cases[c].expect, "%s", cases[c].what);
                cr_assert_eq(boot_cache_misses(cache), misses + 1, "%s", cases[c].what);
                cr_assert_eq(boot_cache_hits(cache), hits, "%s", cases[c].what);
                /* a refused image is not stored */
                cr_assert_eq(boot_cache_n_entries(cache), MIN(n + (cases[c].expect == 0), BOOT_CACHE_DEFAULT_ENTRIES),
                             "%s", cases[c].what);
                cr_assert(log_has(&r, cases[c].log), "%s: no '%s'", cases[c].what, cases[c].log);
                if (cases[c].expect < 0)
                        cr_assert(log_has(&r, "slot 0 is not bootable"), "%s", cases[c].what);
                boot_result_done(&r);
        }
}

Test(boot_cache, other_trusted_key_is_refused_on_a_hit) {
        _cleanup_free_ uint8_t *img = NULL;
        BootResult r = {};
        size_t len;

        make_image(&(ImageSpec) { .version = "1.0.0", .key = key_a }, &img, &len);
        put_all(img, len);
        cr_assert_eq(boot_both(0, &r), 0);
        boot_result_done(&r);

        /* devices 2 and 3 trust B only */
        dev_efuse(&devs[2], ESP_CHIP_ESP32C3, digest_b);
        dev_efuse(&devs[3], ESP_CHIP_ESP32C3, digest_b);
        cr_assert_eq(boot_both(2, &r), -ESP_ERR_NOT_FOUND);
        cr_assert_eq(boot_cache_hits(cache), 1);
        cr_assert(log_has(&r, "no signature block carries a trusted key"));
        cr_assert(!log_has(&r, "Signature verified successfully!"));
        boot_result_done(&r);

        /* and an S3 refuses the C3 image on a hit */
        dev_efuse(&devs[2], ESP_CHIP_ESP32S3, digest_a);
        dev_efuse(&devs[3], ESP_CHIP_ESP32S3, digest_a);
        cr_assert_eq(boot_both(2, &r), -ESP_ERR_NOT_FOUND);
        cr_assert_eq(boot_cache_hits(cache), 2);
        cr_assert(log_has(&r, "mismatch chip ID"));
        boot_result_done(&r);

        /* a device that trusts A again still boots from the entry */
        dev_efuse(&devs[2], ESP_CHIP_ESP32C3, digest_a);
        dev_efuse(&devs[3], ESP_CHIP_ESP32C3, digest_a);
        cr_assert_eq(boot_both(2, &r), 0);
        cr_assert_eq(boot_cache_hits(cache), 3);
        boot_result_done(&r);
}

Test(boot_cache, signed_apps_trusted_digest_is_checked_on_a_hit) {
        _cleanup_free_ uint8_t *img = NULL;
        BootOptions o = { .signed_apps_no_secure_boot = true, .has_trusted_key_digest = true };
        char err[256], err_plain[256];
        BootApp app;
        size_t len;
        int k;

        make_image(&(ImageSpec) { .version = "1.0.0", .key = key_a }, &img, &len);
        put_all(img, len);
        for (unsigned i = 0; i < N_DEVS; i++)
                dev_efuse(&devs[i], ESP_CHIP_ESP32C3, NULL);   /* SECURE_BOOT_EN clear: §6.2 */

        memcpy(o.trusted_key_digest, digest_a, 32);
        o.cache = cache;
        cr_assert_eq(boot_verify_slot(devs[0].flash, devs[0].table, devs[0].efuse, &o, 0, &app, err, sizeof err), 0,
                     "%s", err);
        cr_assert_eq(boot_cache_misses(cache), 1);
        cr_assert_eq(boot_verify_slot(devs[1].flash, devs[1].table, devs[1].efuse, &o, 0, &app, err, sizeof err), 0,
                     "%s", err);
        cr_assert_eq(boot_cache_hits(cache), 1);

        /* the device remembers B: refused, with the same reason as without the cache */
        memcpy(o.trusted_key_digest, digest_b, 32);
        k = boot_verify_slot(devs[2].flash, devs[2].table, devs[2].efuse, &o, 0, &app, err, sizeof err);
        cr_assert_eq(boot_cache_hits(cache), 2);
        o.cache = NULL;
        cr_assert_eq(boot_verify_slot(devs[3].flash, devs[3].table, devs[3].efuse, &o, 0, &app, err_plain,
                                      sizeof err_plain), k);
        cr_assert_eq(k, -ENOKEY, "%s", esp_err_to_name(k));
        cr_assert_str_eq(err, err_plain);
}

Test(boot_cache, secure_version_below_efuse_is_refused_on_a_hit) {
        _cleanup_free_ uint8_t *img = NULL;
        BootOptions o = { .cache = cache };
        BootResult r = {};
        char err[256];
        size_t len;

        make_image(&(ImageSpec) { .version = "1.0.0", .secure_version = 1, .key = key_a }, &img, &len);
        put_all(img, len);
        cr_assert_eq(boot_both(0, &r), 0);
        cr_assert_eq(efuse_secure_version(devs[0].efuse), 1);   /* first boot raised it */
        boot_result_done(&r);

        cr_assert_eq(efuse_burn_secure_version(devs[2].efuse, 2), 0);
        cr_assert_eq(efuse_burn_secure_version(devs[3].efuse, 2), 0);
        cr_assert_eq(boot_verify_slot(devs[2].flash, devs[2].table, devs[2].efuse, &o, 0, NULL, err, sizeof err),
                     -ESP_ERR_OTA_SMALL_SEC_VER);
        cr_assert(strstr(err, "anti-rollback"), "%s", err);
        cr_assert_eq(boot_cache_hits(cache), 1);

        cr_assert_eq(boot_both(2, &r), -ESP_ERR_NOT_FOUND);
        cr_assert_eq(boot_cache_hits(cache), 2);
        cr_assert(log_has(&r, "is below the eFuse SECURE_VERSION 2"));
        boot_result_done(&r);
}

Test(boot_cache, update_and_rollback_paths_agree_with_cache) {
        _cleanup_free_ uint8_t *v1 = NULL, *v2 = NULL;
        BootResult r = {}, plain = {};
        size_t len1, len2;
        int k, k_plain;

        /* ota_0 = v1 VALID, ota_1 = v2 (no-connect) NEW, then invalidated: the whole round agrees */
        make_image(&(ImageSpec) { .version = "1.0.0", .key = key_a }, &v1, &len1);
        make_image(&(ImageSpec) { .version = "1.1.0", .key = key_a, .behaviour = APP_BEHAVIOUR_NO_CONNECT }, &v2, &len2);
        for (unsigned i = 0; i < 2; i++) {
                put_bytes(&devs[i], 0, v1, len1);
                cr_assert_eq(boot_init_otadata(devs[i].flash, devs[i].table, 0, OTA_IMG_VALID), 0);
                put_bytes(&devs[i], 1, v2, len2);
                cr_assert_eq(boot_set_boot_slot(devs[i].flash, devs[i].table, 1), 0);
        }
        for (unsigned round = 0; round < 3; round++) {
                BootOptions o = { .cache = cache };

                k = boot_with(&devs[0], cache, &r);
                k_plain = boot_with(&devs[1], NULL, &plain);
                assert_same_result(k, &r, k_plain, &plain);
                cr_assert_eq(k, 0);
                cr_assert_eq(r.app.slot, round == 0 ? 1 : 0);
                if (r.app.slot == 1) {
                        k = boot_mark_app_invalid_rollback(devs[0].flash, devs[0].table, devs[0].efuse, &r.app, &o);
                        k_plain = boot_mark_app_invalid_rollback(devs[1].flash, devs[1].table, devs[1].efuse,
                                                                 &plain.app, NULL);
                        cr_assert_eq(k, k_plain);
                        cr_assert_eq(k, 0);
                }
                boot_result_done(&r);
                boot_result_done(&plain);
        }
        cr_assert_gt(boot_cache_hits(cache), 0);
        cr_assert_eq(boot_cache_n_entries(cache), 2);
}

Test(boot_cache, bounded_by_entries_and_bytes) {
        _cleanup_(boot_cache_freep) BootCache *small = NULL;
        uint8_t *imgs[3] = {};
        size_t lens[3];
        BootResult r = {};
        BootOptions o;
        char version[16];

        for (unsigned i = 0; i < 3; i++) {
                snprintf(version, sizeof version, "1.0.%u", i);
                make_image(&(ImageSpec) { .version = version, .key = key_a }, &imgs[i], &lens[i]);
        }
        cr_assert_eq(lens[0], lens[1]);

        /* two entries: A, B, a hit on A, then C evicts B (the least recently used) */
        cr_assert_eq(boot_cache_new(2, 0, &small), 0);
        o = (BootOptions) { .cache = small };
        for (unsigned i = 0; i < 3; i++) {
                unsigned which = i == 2 ? 0 : i;   /* A, B, A */
                put_bytes(&devs[0], 0, imgs[which], lens[which]);
                cr_assert_eq(boot_verify_slot(devs[0].flash, devs[0].table, devs[0].efuse, &o, 0, NULL, NULL, 0), 0);
        }
        cr_assert_eq(boot_cache_hits(small), 1);
        put_bytes(&devs[0], 0, imgs[2], lens[2]);
        cr_assert_eq(boot_verify_slot(devs[0].flash, devs[0].table, devs[0].efuse, &o, 0, NULL, NULL, 0), 0);
        cr_assert_eq(boot_cache_n_entries(small), 2);
        cr_assert_eq(boot_cache_bytes(small), boot_cache_n_entries(small) * lens[0]);

        put_bytes(&devs[0], 0, imgs[0], lens[0]);
        cr_assert_eq(boot_verify_slot(devs[0].flash, devs[0].table, devs[0].efuse, &o, 0, NULL, NULL, 0), 0);
        cr_assert_eq(boot_cache_hits(small), 2, "A was kept");
        put_bytes(&devs[0], 0, imgs[1], lens[1]);
        cr_assert_eq(boot_verify_slot(devs[0].flash, devs[0].table, devs[0].efuse, &o, 0, NULL, NULL, 0), 0);
        cr_assert_eq(boot_cache_hits(small), 2, "B was evicted");
        cr_assert_eq(boot_cache_misses(small), 4);
        cr_assert_eq(boot_cache_n_entries(small), 2);
        small = boot_cache_free(small);

        /* a byte cap of one image and a bit: never two */
        cr_assert_eq(boot_cache_new(8, lens[0] + lens[0] / 2, &small), 0);
        o.cache = small;
        for (unsigned i = 0; i < 3; i++) {
                put_bytes(&devs[0], 0, imgs[i], lens[i]);
                cr_assert_eq(boot_verify_slot(devs[0].flash, devs[0].table, devs[0].efuse, &o, 0, NULL, NULL, 0), 0);
                cr_assert_eq(boot_cache_n_entries(small), 1);
                cr_assert_leq(boot_cache_bytes(small), lens[0] + lens[0] / 2);
        }
        small = boot_cache_free(small);

        /* a cap below the image: nothing is stored, and it still boots */
        cr_assert_eq(boot_cache_new(8, lens[0] - 1, &small), 0);
        o.cache = small;
        put_bytes(&devs[0], 0, imgs[0], lens[0]);
        for (unsigned i = 0; i < 2; i++) {
                cr_assert_eq(boot_run(devs[0].flash, devs[0].table, devs[0].efuse, &o, &r), 0);
                boot_result_done(&r);
        }
        cr_assert_eq(boot_cache_n_entries(small), 0);
        cr_assert_eq(boot_cache_bytes(small), 0);
        cr_assert_eq(boot_cache_misses(small), 2);

        for (unsigned i = 0; i < 3; i++)
                free(imgs[i]);
}
