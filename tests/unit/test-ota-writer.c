/* SPDX-License-Identifier: MIT */
/* The streaming OTA writer (esp-formats.md §7.2, §8) on an emulated device
 * running v1.0.0 from ota_0 (signed by the trusted key A). */

#include "ota-fixture.h"
#include "ota/ota-writer.h"

static Dev dev;
static BootResult running;

static void boot_device(const BootOptions *o) {
        boot_result_done(&running);
        cr_assert_eq(boot_run(dev.flash, dev.table, dev.efuse, o, &running), 0);
}

static void setup(void) {
        dev_open(&dev, true);
        put_image(&dev, 0, &(ImageSpec) { .version = "1.0.0", .secure_version = 1, .key = key_a });
        boot_device(NULL);
        cr_assert_eq(running.app.slot, 0);
}

static void teardown(void) {
        boot_result_done(&running);
        dev_close(&dev);
}

TestSuite(ota_writer, .init = setup, .fini = teardown, .timeout = 120);

static const OtaWriterOptions c3 = { .chip_id = ESP_CHIP_ID_ESP32C3 };

/* Streams `img` in chunks of `chunk` bytes; returns the first error. */
static int stream(OtaWriter *w, const uint8_t *img, size_t len, size_t chunk, char *err, size_t errlen) {
        for (size_t off = 0; off < len; off += chunk) {
                int k = ota_writer_write(w, img + off, MIN(chunk, len - off), err, errlen);
                if (k < 0)
                        return k;
        }
        return ota_writer_finish(w, err, errlen);
}

static bool slot_blank(unsigned slot, size_t len) {
        FlashRegion r = slot_region(&dev, slot);
        _cleanup_free_ uint8_t *buf = malloc(len);

        cr_assert_eq(flash_region_read(&r, 0, buf, len), 0);
        for (size_t i = 0; i < len; i++)
                if (buf[i] != 0xFF)
                        return false;
        return true;
}

/* Runs a whole OTA of `spec` and returns its result; err gets the reason. */
static int ota(const ImageSpec *spec, const OtaWriterOptions *o, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *img = NULL;
        OtaWriter *w = NULL;
        size_t len;
        int k;

        make_image(spec, &img, &len);
        k = ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, o, &w, err, errlen);
        if (k < 0)
                return k;
        cr_assert_eq(ota_writer_target_slot(w), 1);
        k = stream(w, img, len, 1000, err, errlen);
        if (k >= 0)
                k = ota_writer_set_boot(w, err, errlen);
        ota_writer_free(w);
        return k;
}

Test(ota_writer, happy_path) {
        _cleanup_free_ uint8_t *img = NULL, *back = NULL;
        FlashRegion r1 = slot_region(&dev, 1);
        OtaWriter *w = NULL;
        char err[256] = "";
        size_t len;

        make_image(&(ImageSpec) { .version = "1.1.0", .secure_version = 1, .key = key_a, .size = 200000 }, &img, &len);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);

        /* nothing reaches flash before the first 1,024 bytes were checked */
        cr_assert_eq(ota_writer_write(w, img, 700, err, sizeof err), 0, "%s", err);
        cr_assert(!ota_writer_have_desc(w));
        cr_assert_eq(ota_writer_flashed(w), 0);
        cr_assert_eq(ota_writer_write(w, img + 700, 700, err, sizeof err), 0, "%s", err);
        cr_assert(ota_writer_have_desc(w));
        cr_assert_str_eq(ota_writer_desc(w)->version, "1.1.0");
        /* then flash takes whole sectors; a flush writes what waits */
        cr_assert_eq(ota_writer_flashed(w), 0);
        cr_assert_eq(ota_writer_write(w, img + 1400, 3000, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_flashed(w), 4096);
        cr_assert_eq(ota_writer_written(w), 4400);
        cr_assert_eq(ota_writer_flush(w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_flashed(w), 4400);
        cr_assert_eq(ota_writer_write(w, img + 4400, 10000, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_flashed(w), 12288);
        cr_assert_eq(stream(w, img + 14400, len - 14400, 4093, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_written(w), len);
        cr_assert_eq(ota_writer_set_boot(w, err, sizeof err), 0, "%s", err);
        ota_writer_free(w);

        back = malloc(len);
        cr_assert_eq(flash_region_read(&r1, 0, back, len), 0);
        cr_assert_arr_eq(back, img, len);

        /* the next boot runs it, PENDING_VERIFY */
        boot_device(NULL);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "1.1.0");
        cr_assert_eq(running.app.ota_state, OTA_IMG_PENDING_VERIFY);

        /* and no new OTA until it is confirmed */
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err),
                     -ESP_ERR_OTA_ROLLBACK_INVALID_STATE);
        cr_assert_not_null(strstr(err, "PENDING_VERIFY"), "%s", err);
        cr_assert_eq(boot_mark_app_valid(dev.flash, dev.table, dev.efuse, &running.app, NULL), 0);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_target_slot(w), 0);
        ota_writer_free(w);
}

Test(ota_writer, same_version_refused_unless_allowed) {
        char err[256] = "";
        OtaWriterOptions equal = c3;

        cr_assert_eq(ota(&(ImageSpec) { .version = "1.0.0", .secure_version = 1, .key = key_a }, &c3, err, sizeof err),
                     -ESP_FAIL_CODE);
        cr_assert_not_null(strstr(err, "same"), "%s", err);
        cr_assert(slot_blank(1, 8192), "nothing may be written before the checks");

        equal.allow_equal_version = true;
        cr_assert_eq(ota(&(ImageSpec) { .version = "1.0.0", .secure_version = 1, .key = key_a }, &equal, err, sizeof err),
                     0, "%s", err);
}

Test(ota_writer, older_version_refused) {
        char err[256] = "";
        OtaWriterOptions equal = c3;

        equal.allow_equal_version = true;
        /* compared as versions, not strings: 0.10.0 < 1.0.0 and 1.0.0-rc1 < 1.0.0 */
        cr_assert_eq(ota(&(ImageSpec) { .version = "0.10.0", .secure_version = 1, .key = key_a }, &equal, err, sizeof err),
                     -ESP_FAIL_CODE);
        cr_assert_not_null(strstr(err, "older"), "%s", err);
        cr_assert_eq(ota(&(ImageSpec) { .version = "1.0.0-rc1", .secure_version = 1, .key = key_a }, &equal, err, sizeof err),
                     -ESP_FAIL_CODE);
        cr_assert(slot_blank(1, 8192));
        /* 1.0.10 > 1.0.9 > 1.0.0 */
        cr_assert_eq(ota(&(ImageSpec) { .version = "1.0.10", .secure_version = 1, .key = key_a }, &c3, err, sizeof err),
                     0, "%s", err);
}

Test(ota_writer, lower_secure_version_refused) {
        char err[256] = "";

        cr_assert_eq(efuse_secure_version(dev.efuse), 1);
        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 0, .key = key_a }, &c3, err, sizeof err),
                     -ESP_ERR_OTA_SMALL_SEC_VER);
        cr_assert_not_null(strstr(err, "0 < 1"), "%s", err);
        cr_assert(slot_blank(1, 8192));
}

Test(ota_writer, wrong_chip_refused) {
        char err[256] = "";

        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 1, .key = key_a,
                                        .chip_id = ESP_CHIP_ID_ESP32S3 }, &c3, err, sizeof err),
                     -ESP_ERR_INVALID_VERSION);
        cr_assert_not_null(strstr(err, "chip"), "%s", err);
        cr_assert(slot_blank(1, 8192));
}

static void assert_unbootable(void) {
        uint8_t b;
        FlashRegion r1 = slot_region(&dev, 1);

        cr_assert_eq(flash_region_read(&r1, 0, &b, 1), 0);
        cr_assert_eq(b, 0xFF, "the refused image's first sector must be erased");
        cr_assert_lt(boot_verify_slot(dev.flash, dev.table, dev.efuse, NULL, 1, NULL, NULL, 0), 0);
        boot_device(NULL);
        cr_assert_eq(running.app.slot, 0);
}

Test(ota_writer, unsigned_refused) {
        char err[256] = "";

        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 1 }, &c3, err, sizeof err),
                     -ESP_ERR_OTA_VALIDATE_FAILED);
        cr_assert_not_null(strstr(err, "not signed"), "%s", err);
        assert_unbootable();
}

Test(ota_writer, wrong_key_refused) {
        char err[256] = "";

        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 1, .key = key_c }, &c3, err, sizeof err),
                     -ESP_ERR_OTA_VALIDATE_FAILED);
        assert_unbootable();
}

Test(ota_writer, tampered_refused) {
        _cleanup_free_ uint8_t *img = NULL;
        OtaWriter *w = NULL;
        char err[256] = "";
        size_t len;

        make_image(&(ImageSpec) { .version = "2.0.0", .secure_version = 1, .key = key_a, .size = 40000 }, &img, &len);
        img[30000] ^= 0x80;
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0);
        cr_assert_eq(stream(w, img, len, 1500, err, sizeof err), -ESP_ERR_OTA_VALIDATE_FAILED);
        cr_assert_eq(ota_writer_set_boot(w, err, sizeof err), -ESP_ERR_OTA_VALIDATE_FAILED, "set_boot after a failure");
        ota_writer_free(w);
        assert_unbootable();
}

Test(ota_writer, garbage_refused_before_writing) {
        /* what `openssl s_server -WWW` sends for a missing file */
        static const char page[] = "Error opening 'fw.bin' mode='r'\n";
        OtaWriter *w = NULL;
        char err[256] = "";

        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0);
        cr_assert_eq(ota_writer_write(w, page, sizeof page - 1, err, sizeof err), -ESP_ERR_OTA_VALIDATE_FAILED);
        cr_assert_not_null(strstr(err, "magic"), "%s", err);
        ota_writer_free(w);
        cr_assert(slot_blank(1, 4096));
}

Test(ota_writer, resume_gives_the_same_result) {
        _cleanup_free_ uint8_t *img = NULL, *back = NULL;
        FlashRegion r1 = slot_region(&dev, 1);
        OtaWriter *w = NULL;
        char err[256] = "";
        uint64_t done;
        size_t len;

        make_image(&(ImageSpec) { .version = "1.2.0", .secure_version = 1, .key = key_a, .size = 100000 }, &img, &len);

        /* first attempt: cut after 37,000 bytes */
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0);
        for (size_t off = 0; off < 37000; off += 3700)
                cr_assert_eq(ota_writer_write(w, img + off, 3700, err, sizeof err), 0, "%s", err);
        /* a transfer that ends early flushes the writer (ota-session) */
        cr_assert_eq(ota_writer_flashed(w), 36864);
        cr_assert_eq(ota_writer_flush(w, err, sizeof err), 0, "%s", err);
        done = ota_writer_flashed(w);
        cr_assert_eq(done, 37000);
        ota_writer_free(w);

        /* resuming below the header size is refused */
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0);
        cr_assert_eq(ota_writer_resume(w, 512, err, sizeof err), -ESP_ERR_INVALID_STATE);
        ota_writer_free(w);

        /* second attempt: Range: bytes=37000- */
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0);
        cr_assert_eq(ota_writer_resume(w, done, err, sizeof err), 0, "%s", err);
        cr_assert(ota_writer_have_desc(w));
        cr_assert_eq(stream(w, img + done, len - done, 5000, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_set_boot(w, err, sizeof err), 0, "%s", err);
        ota_writer_free(w);

        back = malloc(len);
        cr_assert_eq(flash_region_read(&r1, 0, back, len), 0);
        cr_assert_arr_eq(back, img, len);
        boot_device(NULL);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "1.2.0");
}

Test(ota_writer, resume_over_foreign_bytes_refused) {
        OtaWriter *w = NULL;
        char err[256] = "";
        uint8_t junk[4096];

        memset(junk, 0x5A, sizeof junk);
        put_bytes(&dev, 1, junk, sizeof junk);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0);
        cr_assert_eq(ota_writer_resume(w, 4096, err, sizeof err), -ESP_ERR_INVALID_STATE);
        cr_assert_not_null(strstr(err, "not the start of an image"), "%s", err);
        ota_writer_free(w);
}

Test(ota_writer, signed_apps_mode_trusts_the_running_key) {
        char err[256] = "";
        OtaWriterOptions o = c3;
        BootOptions bo = { .signed_apps_no_secure_boot = true };
        Efuse *e;

        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &e), 0);    /* no hardware secure boot */
        efuse_free(dev.efuse);
        dev.efuse = e;
        boot_device(&bo);
        cr_assert(running.app.has_key_digest);
        o.signed_apps_no_secure_boot = true;

        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 1, .key = key_b }, &o, err, sizeof err),
                     -ESP_ERR_OTA_VALIDATE_FAILED, "%s", err);
        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 1 }, &o, err, sizeof err), -ESP_ERR_OTA_VALIDATE_FAILED);
        cr_assert_eq(ota(&(ImageSpec) { .version = "2.0.0", .secure_version = 1, .key = key_a }, &o, err, sizeof err), 0, "%s", err);
}

Test(ota_writer, abort_mid_image_leaves_the_slot_unbootable) {
        _cleanup_free_ uint8_t *img = NULL;
        OtaWriter *w = NULL;
        char err[256] = "";
        size_t len;

        make_image(&(ImageSpec) { .version = "1.1.0", .secure_version = 1, .key = key_a, .size = 60000 }, &img, &len);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_write(w, img, 30000, err, sizeof err), 0, "%s", err);
        cr_assert(!slot_blank(1, 16), "the header is on flash");
        cr_assert_eq(ota_writer_abort(w), 0);
        cr_assert(slot_blank(1, 16));
        cr_assert_lt(ota_writer_write(w, img + 30000, 100, err, sizeof err), 0, "no writes after abort");
        ota_writer_free(w);
        boot_device(NULL);
        cr_assert_eq(running.app.slot, 0);
}

Test(ota_writer, abort_after_a_resume_erases_too) {
        _cleanup_free_ uint8_t *img = NULL;
        OtaWriter *w = NULL;
        char err[256] = "";
        size_t len;

        make_image(&(ImageSpec) { .version = "1.1.0", .secure_version = 1, .key = key_a, .size = 60000 }, &img, &len);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_write(w, img, 20000, err, sizeof err), 0, "%s", err);
        w = ota_writer_free(w);   /* a retry: the bytes stay for the resume */
        cr_assert(!slot_blank(1, 16));
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_resume(w, 20000, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_abort(w), 0);
        cr_assert(slot_blank(1, 16));
        ota_writer_free(w);
}

Test(ota_writer, abort_before_writing_keeps_the_old_app) {
        /* refused in the first 1,024 bytes: the target was never touched, the
         * previous app there (a rollback target) stays intact */
        _cleanup_free_ uint8_t *img = NULL;
        OtaWriter *w = NULL;
        char err[256] = "";
        size_t len;

        put_image(&dev, 1, &(ImageSpec) { .version = "0.9.0", .secure_version = 1, .key = key_a });
        make_image(&(ImageSpec) { .version = "1.1.0", .secure_version = 1, .key = key_a }, &img, &len);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_write(w, img, 500, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_abort(w), 0);
        ota_writer_free(w);
        cr_assert(!slot_blank(1, 16), "an untouched slot is not erased");
}

Test(ota_writer, abort_after_set_boot_is_a_no_op) {
        _cleanup_free_ uint8_t *img = NULL;
        OtaWriter *w = NULL;
        char err[256] = "";
        size_t len;

        make_image(&(ImageSpec) { .version = "1.1.0", .secure_version = 1, .key = key_a }, &img, &len);
        cr_assert_eq(ota_writer_new(dev.flash, dev.table, dev.efuse, &running.app, &c3, &w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(stream(w, img, len, 4000, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_set_boot(w, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ota_writer_abort(w), 0);
        ota_writer_free(w);
        boot_device(NULL);
        cr_assert_eq(running.app.slot, 1);
        cr_assert_str_eq(running.app.desc.version, "1.1.0");
}
