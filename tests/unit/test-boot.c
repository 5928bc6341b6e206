/* SPDX-License-Identifier: MIT */
/* The bootloader logic (esp-formats.md §7.2, §7.3) on an emulated device. */

#include "ota-fixture.h"

static Dev dev;

static void setup(void) {
        dev_open(&dev, true);
}

static void teardown(void) {
        dev_close(&dev);
}

TestSuite(boot, .init = setup, .fini = teardown, .timeout = 120);

static void boot(BootResult *r, int expect) {
        int k = boot_run(dev.flash, dev.table, dev.efuse, NULL, r);
        if (k != expect)
                log_dump(r);
        cr_assert_eq(k, expect, "boot_run: %s, expected %s", esp_err_to_name(k), esp_err_to_name(expect));
}

static uint32_t slot_state(unsigned slot) {
        uint32_t s;
        cr_assert_eq(boot_get_slot_state(dev.flash, dev.table, slot, &s), 0);
        return s;
}

/* ota_0 = v1 confirmed (seq 1, VALID), ota_1 = `next` selected as NEW. */
static void prepare_update(const ImageSpec *next) {
        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .key = key_a });
        cr_assert_eq(boot_init_otadata(dev.flash, dev.table, 0, OTA_IMG_VALID), 0);
        put_image(&dev, 1, next);
        cr_assert_eq(boot_set_boot_slot(dev.flash, dev.table, 1), 0);
        cr_assert_eq(slot_state(1), OTA_IMG_NEW);
}

Test(boot, first_boot_with_blank_otadata) {
        BootResult r = {};
        FlashRegion od = otadata_region(&dev);
        Otadata d;
        char line[96];

        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .key = key_a });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert_str_eq(r.app.desc.version, "1.0.0");
        cr_assert_eq(r.app.ota_state, OTA_IMG_VALID);
        cr_assert(!r.rolled_back);
        snprintf(line, sizeof line, "boot: Loaded app from partition at offset 0x%x", slot_region(&dev, 0).offset);
        cr_assert(log_has(&r, line), "no '%s' line", line);
        cr_assert(log_has(&r, "I ("));
        cr_assert(r.app.has_key_digest);
        cr_assert_arr_eq(r.app.key_digest, digest_a, 32);

        /* entry 0 = {seq 1, VALID} */
        cr_assert_eq(otadata_read(&od, &d), 0);
        cr_assert(d.valid[0]);
        cr_assert_eq(d.entry[0].ota_seq, 1);
        cr_assert_eq(d.entry[0].ota_state, OTA_IMG_VALID);
        cr_assert_eq(d.entry[0].crc, otadata_seq_crc(1));
        boot_result_done(&r);
}

Test(boot, nothing_to_boot) {
        BootResult r = {};

        boot(&r, -ESP_ERR_NOT_FOUND);
        cr_assert_eq(r.app.slot, -1);
        cr_assert(log_has(&r, "No bootable app"));
        boot_result_done(&r);
}

Test(boot, new_becomes_pending_verify_then_valid) {
        BootResult r = {};
        bool changed;

        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_a });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 1);
        cr_assert_str_eq(r.app.desc.version, "1.1.0");
        cr_assert_eq(r.app.ota_state, OTA_IMG_PENDING_VERIFY);
        cr_assert_eq(slot_state(1), OTA_IMG_PENDING_VERIFY);

        cr_assert_eq(boot_mark_app_valid(dev.flash, dev.table, dev.efuse, &r.app, &changed), 0);
        cr_assert_eq(slot_state(1), OTA_IMG_VALID);
        cr_assert(!changed);
        boot_result_done(&r);

        /* stays on the new app */
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 1);
        cr_assert_eq(r.app.ota_state, OTA_IMG_VALID);
        boot_result_done(&r);
}

Test(boot, unconfirmed_app_is_aborted_and_rolled_back) {
        BootResult r = {};

        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_a });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 1);
        boot_result_done(&r);

        /* restart without esp_ota_mark_app_valid_cancel_rollback() */
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert_str_eq(r.app.desc.version, "1.0.0");
        cr_assert_eq(r.app.ota_state, OTA_IMG_VALID);
        cr_assert(log_has(&r, "ABORTED"));
        cr_assert(log_has(&r, "W ("));
        boot_result_done(&r);

        /* and it stays there */
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        boot_result_done(&r);
}

Test(boot, invalid_rollback_and_its_refusal) {
        BootResult r = {};

        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_a, .behaviour = APP_BEHAVIOUR_NO_CONNECT });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 1);
        cr_assert_eq(r.app.behaviour, APP_BEHAVIOUR_NO_CONNECT);
        cr_assert_eq(boot_mark_app_invalid_rollback(dev.flash, dev.table, dev.efuse, &r.app, NULL), 0);
        boot_result_done(&r);

        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0, "an INVALID entry is skipped");
        boot_result_done(&r);

        /* with nothing else bootable, the app may not invalidate itself */
        FlashRegion r1 = slot_region(&dev, 1);
        cr_assert_eq(flash_region_erase(&r1, 0, FLASH_SECTOR_SIZE), 0);
        boot(&r, 0);
        cr_assert_eq(boot_mark_app_invalid_rollback(dev.flash, dev.table, dev.efuse, &r.app, NULL),
                     -ESP_ERR_OTA_ROLLBACK_FAILED);
        cr_assert_eq(slot_state(0), OTA_IMG_VALID);
        boot_result_done(&r);
}

Test(boot, anti_rollback_skips_low_secure_version) {
        BootResult r = {};

        cr_assert_eq(efuse_burn_secure_version(dev.efuse, 2), 0);
        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .secure_version = 2, .key = key_a });
        cr_assert_eq(boot_init_otadata(dev.flash, dev.table, 0, OTA_IMG_VALID), 0);
        put_image(&dev, 1, &(ImageSpec) { .version = "2.0.0", .secure_version = 1, .key = key_a });
        cr_assert_eq(boot_set_boot_slot(dev.flash, dev.table, 1), 0);

        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert_eq(r.app.desc.secure_version, 2);
        cr_assert(log_has(&r, "anti-rollback"));
        cr_assert_eq(efuse_secure_version(dev.efuse), 2);
        boot_result_done(&r);
}

Test(boot, valid_app_raises_efuse_secure_version) {
        BootResult r = {};
        bool changed;

        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .secure_version = 3, .key = key_a });
        cr_assert_eq(efuse_secure_version(dev.efuse), 0);
        boot(&r, 0);   /* first boot writes VALID, then raises */
        cr_assert_eq(r.app.ota_state, OTA_IMG_VALID);
        cr_assert(r.efuse_changed);
        cr_assert_eq(efuse_secure_version(dev.efuse), 3);
        boot_result_done(&r);

        /* a PENDING_VERIFY app does not burn at boot; mark_app_valid does */
        put_image(&dev, 1, &(ImageSpec) { .version = "1.1.0", .secure_version = 5, .key = key_a });
        cr_assert_eq(boot_set_boot_slot(dev.flash, dev.table, 1), 0);
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 1);
        cr_assert(!r.efuse_changed);
        cr_assert_eq(efuse_secure_version(dev.efuse), 3);
        cr_assert_eq(boot_mark_app_valid(dev.flash, dev.table, dev.efuse, &r.app, &changed), 0);
        cr_assert(changed);
        cr_assert_eq(efuse_secure_version(dev.efuse), 5);
        boot_result_done(&r);
}

Test(boot, corrupt_hash_falls_back) {
        _cleanup_free_ uint8_t *img = NULL;
        BootResult r = {};
        size_t len;

        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_a });
        make_image(&(ImageSpec) { .version = "1.1.0", .key = key_a }, &img, &len);
        img[APP_MARKER_OFFSET + APP_MARKER_LEN + 40] ^= 0x01;   /* a data byte */
        put_bytes(&dev, 1, img, len);

        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert(r.rolled_back);
        cr_assert(log_has(&r, "E ("));
        cr_assert(log_has(&r, "esp_image"));
        cr_assert(log_has(&r, "slot 1 is not bootable"));
        boot_result_done(&r);
}

Test(boot, untrusted_signature_falls_back) {
        BootResult r = {};

        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_c });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert(log_has(&r, "secure_boot_v2"));
        boot_result_done(&r);
}

Test(boot, unsigned_falls_back_under_secure_boot) {
        BootResult r = {};

        prepare_update(&(ImageSpec) { .version = "1.1.0" });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        boot_result_done(&r);
}

Test(boot, revoked_digest_falls_back) {
        BootResult r = {};

        /* ota_0 signed by B (DIGEST1), the update by A (DIGEST0), then DIGEST0 revoked */
        cr_assert_eq(efuse_burn_key(dev.efuse, 1, digest_b, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST1, false), 0);
        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .key = key_b });
        cr_assert_eq(boot_init_otadata(dev.flash, dev.table, 0, OTA_IMG_VALID), 0);
        put_image(&dev, 1, &(ImageSpec) { .version = "1.1.0", .key = key_a });
        cr_assert_eq(boot_set_boot_slot(dev.flash, dev.table, 1), 0);

        cr_assert_eq(efuse_revoke_secure_boot_digest(dev.efuse, 0), 0);
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert_arr_eq(r.app.key_digest, digest_b, 32);
        boot_result_done(&r);
}

Test(boot, boot_fail_marker_falls_back_and_sticks) {
        BootResult r = {};

        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_a, .behaviour = APP_BEHAVIOUR_BOOT_FAIL });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert(r.rolled_back);
        cr_assert(log_has(&r, "boot-fail"));
        boot_result_done(&r);

        /* the failed entry is ABORTED: the next boot does not try it */
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert(!log_has(&r, "boot-fail"));
        boot_result_done(&r);
}

Test(boot, rsa_vector_key) {
        /* the Espressif test key from the vectors, and its published digest */
        EVP_PKEY *rsa = NULL;
        uint8_t digest[32];
        BootResult r = {};
        char err[256];
        Efuse *e;
        FILE *f;

        cr_assert_eq(sbv2_load_key(VECTORS_DIR "/sbv2/rsa_secure_boot_signing_key.pem", true, &rsa, err, sizeof err), 0,
                     "%s", err);
        f = fopen(VECTORS_DIR "/sbv2/rsa_public_key_digest.bin", "re");
        cr_assert_not_null(f);
        cr_assert_eq(fread(digest, 1, 32, f), 32);
        fclose(f);

        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &e), 0);
        cr_assert_eq(efuse_burn_key(e, 2, digest, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0, false), 0);
        cr_assert_eq(efuse_burn_field(e, "SECURE_BOOT_EN", 1), 0);
        efuse_free(dev.efuse);
        dev.efuse = e;

        put_image(&dev, 0, &(ImageSpec) { .version = "3.2.1", .key = rsa });
        boot(&r, 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert_arr_eq(r.app.key_digest, digest, 32);
        boot_result_done(&r);
        EVP_PKEY_free(rsa);
}

Test(boot, signed_apps_without_secure_boot) {
        BootResult r = {};
        BootOptions o = { .signed_apps_no_secure_boot = true };
        Efuse *e;

        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &e), 0);   /* SECURE_BOOT_EN clear */
        efuse_free(dev.efuse);
        dev.efuse = e;

        /* the previous (VALID) app is signed by A: an update signed by C does not boot */
        prepare_update(&(ImageSpec) { .version = "1.1.0", .key = key_c });
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, &o, &r), 0);
        cr_assert_eq(r.app.slot, 0);
        boot_result_done(&r);

        put_image(&dev, 1, &(ImageSpec) { .version = "1.2.0", .key = key_a });
        cr_assert_eq(boot_set_boot_slot(dev.flash, dev.table, 1), 0);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, &o, &r), 0);
        cr_assert_eq(r.app.slot, 1);
        boot_result_done(&r);

        /* without the mode, an unsigned app boots when secure boot is off */
        put_image(&dev, 0, &(ImageSpec) { .version = "1.3.0" });
        cr_assert_eq(boot_set_boot_slot(dev.flash, dev.table, 0), 0);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, NULL, &r), 0);
        cr_assert_eq(r.app.slot, 0);
        cr_assert(!r.app.has_key_digest);
        boot_result_done(&r);
}
