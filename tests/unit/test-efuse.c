/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "dsemu/efuse.h"

static const uint8_t key_a[32] = {
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

static Efuse *new_efuse(EspChip chip) {
        Efuse *e = NULL;
        cr_assert_eq(efuse_new(chip, &e), 0);
        return e;
}

static uint64_t field(const Efuse *e, const char *name) {
        uint64_t v = 0;
        cr_assert_eq(efuse_get_field(e, name, &v), 0, "get %s", name);
        return v;
}

static char tmpdir[] = "/tmp/test-efuse-XXXXXX";

static void setup_tmp(void) {
        cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown_tmp(void) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
}

Test(efuse, chip_and_purpose_names) {
        cr_assert_str_eq(esp_chip_to_string(ESP_CHIP_ESP32C3), "esp32c3");
        cr_assert_eq(esp_chip_from_string("esp32s3"), ESP_CHIP_ESP32S3);
        cr_assert_eq(esp_chip_from_string("esp32"), _ESP_CHIP_INVALID);
        cr_assert_eq(esp_chip_image_id(ESP_CHIP_ESP32C3), 5);
        cr_assert_eq(esp_chip_image_id(ESP_CHIP_ESP32S3), 9);
        cr_assert_eq(esp_chip_image_id(_ESP_CHIP_MAX), -EINVAL);

        cr_assert_str_eq(efuse_key_purpose_to_string(EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE),
                         "HMAC_DOWN_DIGITAL_SIGNATURE");
        cr_assert_eq(efuse_key_purpose_from_string("HMAC_UP"), 8);
        cr_assert_eq(efuse_key_purpose_from_string("SECURE_BOOT_DIGEST2"), 11);
        cr_assert_eq(efuse_key_purpose_from_string("hmac_up"), _EFUSE_KEY_PURPOSE_INVALID);
        cr_assert_null(efuse_key_purpose_to_string(12));
        cr_assert(!efuse_key_purpose_valid_for_chip(ESP_CHIP_ESP32C3, EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1));
        cr_assert(efuse_key_purpose_valid_for_chip(ESP_CHIP_ESP32S3, EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2));
        cr_assert(efuse_key_purpose_read_protect_default(EFUSE_KEY_PURPOSE_HMAC_UP));
        cr_assert(!efuse_key_purpose_read_protect_default(EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0));
}

Test(efuse, blank_is_qemu_default) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        uint8_t buf[EFUSE_FILE_SIZE];

        efuse_to_bytes(e, buf);
        for (size_t i = 0; i < sizeof(buf); i++)
                cr_assert_eq(buf[i], i == 38 ? 0x0C : 0, "byte %zu", i);
        for (unsigned n = 0; n < EFUSE_KEY_BLOCKS; n++) {
                cr_assert(efuse_key_block_is_empty(e, n));
                cr_assert_eq(efuse_key_purpose(e, n), EFUSE_KEY_PURPOSE_USER);
                cr_assert(efuse_key_is_readable(e, n));
                cr_assert(efuse_key_is_writeable(e, n));
        }
        cr_assert_eq(efuse_key_purpose(e, 6), _EFUSE_KEY_PURPOSE_INVALID);
        cr_assert_eq(efuse_find_key_block(e, EFUSE_KEY_PURPOSE_HMAC_UP), -ENOENT);
}

Test(efuse, burn_key_read_protected, .init = setup_tmp, .fini = teardown_tmp) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        uint8_t out[32], mac[32], want[32], buf[EFUSE_FILE_SIZE];
        unsigned want_len = 0;
        char val[128];
        const EfuseFieldInfo *f;

        cr_assert_eq(efuse_burn_key(e, 1, key_a, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        cr_assert_eq(efuse_key_purpose(e, 1), EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        cr_assert(!efuse_key_is_readable(e, 1));
        cr_assert(!efuse_key_is_writeable(e, 1));
        cr_assert(!efuse_key_block_is_empty(e, 1));
        cr_assert_eq(efuse_find_key_block(e, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE), 1);

        /* Software view: zeros. */
        memset(out, 0xaa, sizeof(out));
        cr_assert_eq(efuse_read_key(e, 1, out), 0);
        for (size_t i = 0; i < 32; i++)
                cr_assert_eq(out[i], 0);
        f = efuse_field_by_name(ESP_CHIP_ESP32C3, "BLOCK_KEY1");
        cr_assert_not_null(f);
        cr_assert(!efuse_field_is_readable(e, f));
        cr_assert_eq(efuse_field_get_raw(e, f, out, sizeof(out)), 0);
        for (size_t i = 0; i < 32; i++)
                cr_assert_eq(out[i], 0);
        cr_assert_eq(efuse_field_format_value(e, f, val, sizeof(val)), 0);
        cr_assert(strncmp(val, "?? ?? ??", 8) == 0, "summary value: %s", val);
        cr_assert_null(strstr(val, "00"));

        /* Field bits landed where §2.3 says: KEY_PURPOSE_1 = bits 92..95,
         * RD_DIS bit 1 = bit 33, WR_DIS bits 9 (purpose) and 24 (block). */
        efuse_to_bytes(e, buf);
        cr_assert_eq(buf[11], 0x70);
        cr_assert_eq(buf[4], 0x02);
        cr_assert_eq(buf[1], 0x02);
        cr_assert_eq(buf[3], 0x01);
        cr_assert_eq(field(e, "RD_DIS"), 0x02);
        cr_assert_eq(field(e, "WR_DIS"), (1u << 9) | (1u << 24));
        cr_assert_eq(field(e, "KEY_PURPOSE_1"), 7);
        /* The real key sits in BLOCK5 of the QEMU file (offset 48 + 3*32). */
        cr_assert_arr_eq(buf + 48 + 3 * 32, key_a, 32);

        /* HMAC (the hardware path) uses the real key. */
        cr_assert_not_null(HMAC(EVP_sha256(), key_a, 32, (const unsigned char *) "abc", 3, want, &want_len));
        cr_assert_eq(efuse_hmac(e, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, "abc", 3, mac), 0);
        cr_assert_arr_eq(mac, want, 32);
        /* Upstream on a DS key: purpose mismatch. */
        cr_assert_eq(efuse_hmac(e, 1, EFUSE_KEY_PURPOSE_HMAC_UP, "abc", 3, mac),
                     -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);
        cr_assert_eq(efuse_hmac(e, 1, EFUSE_KEY_PURPOSE_USER, "abc", 3, mac), -EINVAL);

        /* Survives a save/load, still hidden. */
        char path[128];
        struct stat st;
        Efuse *l = NULL;
        char err[256] = "";
        snprintf(path, sizeof(path), "%s/efuse.bin", tmpdir);
        cr_assert_eq(efuse_save(e, path), 0);
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        cr_assert_eq(st.st_size, EFUSE_FILE_SIZE);
        cr_assert_eq(efuse_load(path, ESP_CHIP_ESP32C3, &l, err, sizeof(err)), 0, "%s", err);
        cr_assert(!efuse_key_is_readable(l, 1));
        cr_assert_eq(efuse_hmac(l, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, "abc", 3, mac), 0);
        cr_assert_arr_eq(mac, want, 32);
        efuse_free(l);
}

Test(efuse, burn_key_refusals) {
        _cleanup_(efuse_freep) Efuse *c3 = new_efuse(ESP_CHIP_ESP32C3);
        _cleanup_(efuse_freep) Efuse *s3 = new_efuse(ESP_CHIP_ESP32S3);

        cr_assert_eq(efuse_burn_key(c3, 0, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), 0);
        /* Not empty any more (data, purpose and protection all burned). */
        cr_assert_eq(efuse_burn_key(c3, 0, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), -EEXIST);
        cr_assert_eq(efuse_burn_key(c3, 6, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), -ERANGE);
        /* Purposes the chip lacks, RESERVED, the BLOCK_KEY5 XTS quirk. */
        cr_assert_eq(efuse_burn_key(c3, 2, key_a, EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1, true), -EINVAL);
        cr_assert_eq(efuse_burn_key(c3, 2, key_a, EFUSE_KEY_PURPOSE_RESERVED, true), -EINVAL);
        cr_assert_eq(efuse_burn_key(c3, 2, key_a, (EfuseKeyPurpose) 12, true), -EINVAL);
        cr_assert_eq(efuse_burn_key(c3, 5, key_a, EFUSE_KEY_PURPOSE_XTS_AES_128_KEY, true), -EINVAL);
        cr_assert_eq(efuse_burn_key(s3, 5, key_a, EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2, true), -EINVAL);
        cr_assert(efuse_key_block_is_empty(c3, 5));
        cr_assert(efuse_key_block_is_empty(c3, 2));
        cr_assert_eq(efuse_burn_key(s3, 4, key_a, EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1, true), 0);

        /* A block with user data is not empty either. */
        cr_assert_eq(efuse_burn_key(c3, 3, key_a, EFUSE_KEY_PURPOSE_USER, true), 0);
        cr_assert(efuse_key_is_readable(c3, 3), "USER keys are never read-protected");
        cr_assert_eq(efuse_burn_key(c3, 3, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), -EEXIST);

        /* A write-protected empty block (WR_DIS bit 23 + 4) is refused. */
        cr_assert_eq(efuse_burn_field(c3, "WR_DIS", 1u << 27), 0);
        cr_assert_eq(efuse_burn_key(c3, 4, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), -EACCES);
        cr_assert(efuse_key_block_is_empty(c3, 4));
        /* Read protection needs RD_DIS writable (WR_DIS bit 0). */
        cr_assert_eq(efuse_burn_field(c3, "WR_DIS", 1), 0);
        cr_assert_eq(efuse_burn_key(c3, 2, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), -EACCES);
        cr_assert_eq(efuse_burn_key(c3, 2, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, false), 0);
        cr_assert(efuse_key_is_readable(c3, 2));
}

Test(efuse, no_read_protect_and_digests) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        uint8_t out[32], digests[3][32];
        bool present[3];
        char val[128];

        /* --no-read-protect: readable; SECURE_BOOT_DIGEST is never hidden. */
        cr_assert_eq(efuse_burn_key(e, 0, key_a, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, false), 0);
        cr_assert(efuse_key_is_readable(e, 0));
        cr_assert_eq(efuse_read_key(e, 0, out), 0);
        cr_assert_arr_eq(out, key_a, 32);
        cr_assert_eq(efuse_field_format_value(e, efuse_field_by_name(ESP_CHIP_ESP32C3, "BLOCK_KEY0"), val, sizeof(val)), 0);
        cr_assert(strncmp(val, "00 01 02 03", 11) == 0, "%s", val);

        cr_assert_eq(efuse_burn_key(e, 2, key_a, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0, true), 0);
        cr_assert(efuse_key_is_readable(e, 2));
        cr_assert_eq(efuse_burn_key(e, 3, key_a, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST2, true), 0);

        cr_assert_eq(efuse_secure_boot_digests(e, digests, present), 2);
        cr_assert(present[0] && !present[1] && present[2]);
        cr_assert_arr_eq(digests[0], key_a, 32);
        cr_assert_eq(efuse_revoke_secure_boot_digest(e, 0), 0);
        cr_assert_eq(efuse_secure_boot_digests(e, digests, present), 1);
        cr_assert(!present[0] && present[2]);
        cr_assert_eq(efuse_revoke_secure_boot_digest(e, 3), -ERANGE);
}

Test(efuse, xts_key_reversed) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        uint8_t out[32];

        cr_assert_eq(efuse_burn_key(e, 2, key_a, EFUSE_KEY_PURPOSE_XTS_AES_128_KEY, false), 0);
        cr_assert_eq(efuse_read_key(e, 2, out), 0);
        for (size_t i = 0; i < 32; i++)
                cr_assert_eq(out[i], key_a[31 - i]);
}

Test(efuse, hmac_upstream) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32S3);
        uint8_t mac[32], want[32];
        unsigned len = 0;
        static const uint8_t seed[32] = { [0 ... 31] = 0x5a };

        cr_assert_eq(efuse_hmac(e, 0, EFUSE_KEY_PURPOSE_HMAC_UP, seed, 32, mac), -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);
        cr_assert_eq(efuse_burn_key(e, 0, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), 0);
        cr_assert_eq(efuse_hmac(e, 0, EFUSE_KEY_PURPOSE_HMAC_UP, seed, 32, mac), 0);
        cr_assert_not_null(HMAC(EVP_sha256(), key_a, 32, seed, 32, want, &len));
        cr_assert_arr_eq(mac, want, 32);
        cr_assert_eq(efuse_hmac(e, 0, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, seed, 32, mac),
                     -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);
        cr_assert_eq(efuse_hmac(e, 6, EFUSE_KEY_PURPOSE_HMAC_UP, seed, 32, mac), -EINVAL);
}

Test(efuse, fields_only_go_up) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        char err[256] = "";

        cr_assert(!efuse_flash_encryption_enabled(e));
        cr_assert_eq(efuse_burn_field_full(e, "SPI_BOOT_CRYPT_CNT", 1, err, sizeof(err)), 0);
        cr_assert(efuse_flash_encryption_enabled(e));
        cr_assert_eq(efuse_burn_field_full(e, "SPI_BOOT_CRYPT_CNT", 3, err, sizeof(err)), 0);
        cr_assert(!efuse_flash_encryption_enabled(e));
        cr_assert_eq(efuse_burn_field_full(e, "SPI_BOOT_CRYPT_CNT", 4, err, sizeof(err)), -EPERM);
        cr_assert(strstr(err, "SPI_BOOT_CRYPT_CNT"), "err: %s", err);
        cr_assert_eq(field(e, "SPI_BOOT_CRYPT_CNT"), 3);
        /* Same value again: nothing to do. */
        cr_assert_eq(efuse_burn_field(e, "SPI_BOOT_CRYPT_CNT", 3), 0);

        cr_assert_eq(efuse_burn_field_full(e, "SPI_BOOT_CRYPT_CNT", 8, err, sizeof(err)), -ERANGE);
        cr_assert(strstr(err, "SPI_BOOT_CRYPT_CNT") && strstr(err, "3 bits"), "err: %s", err);
        cr_assert_eq(efuse_burn_field_full(e, "NO_SUCH_FIELD", 1, err, sizeof(err)), -ENOENT);
        cr_assert(strstr(err, "NO_SUCH_FIELD"), "err: %s", err);
        cr_assert_eq(efuse_burn_field_full(e, "BLOCK_KEY0", 1, err, sizeof(err)), -E2BIG);
        uint64_t v;
        cr_assert_eq(efuse_get_field(e, "BLOCK_KEY0", &v), -E2BIG);
        cr_assert_eq(efuse_get_field(e, "nope", &v), -ENOENT);

        /* Names are case-insensitive, like espefuse. */
        cr_assert_eq(efuse_burn_field(e, "secure_boot_en", 1), 0);
        cr_assert(efuse_secure_boot_enabled(e));
        cr_assert_eq(efuse_burn_field(e, "SECURE_BOOT_EN", 0), -EPERM);

        /* Bitmaps add bits. */
        cr_assert_eq(efuse_burn_field(e, "RD_DIS", 1), 0);
        cr_assert_eq(efuse_burn_field(e, "RD_DIS", 4), 0);
        cr_assert_eq(field(e, "RD_DIS"), 5);

        /* Purpose values are checked. */
        cr_assert_eq(efuse_burn_field(e, "KEY_PURPOSE_2", 2), -EINVAL);  /* XTS_256 on C3 */
        cr_assert_eq(efuse_burn_field(e, "KEY_PURPOSE_5", 4), -EINVAL);  /* quirk */
        cr_assert_eq(efuse_burn_field(e, "KEY_PURPOSE_2", 12), -EINVAL);
        cr_assert_eq(efuse_burn_field(e, "KEY_PURPOSE_2", 8), 0);
}

Test(efuse, write_protect) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        char err[256] = "";
        const EfuseFieldInfo *f = efuse_field_by_name(ESP_CHIP_ESP32C3, "SPI_BOOT_CRYPT_CNT");

        cr_assert_eq(f->wr_dis_bit, 4);
        cr_assert(efuse_field_is_writeable(e, f));
        cr_assert_eq(efuse_burn_field(e, "WR_DIS", 1u << 4), 0);
        cr_assert(!efuse_field_is_writeable(e, f));
        cr_assert_eq(efuse_burn_field_full(e, "SPI_BOOT_CRYPT_CNT", 1, err, sizeof(err)), -EACCES);
        cr_assert(strstr(err, "SPI_BOOT_CRYPT_CNT") && strstr(err, "write-protected"), "err: %s", err);
        cr_assert_eq(field(e, "SPI_BOOT_CRYPT_CNT"), 0);

        /* Bit 18 guards word 4: DIS_DOWNLOAD_MODE and SECURE_VERSION. */
        cr_assert_eq(efuse_burn_secure_version(e, 2), 0);
        cr_assert_eq(efuse_burn_field(e, "WR_DIS", 1u << 18), 0);
        cr_assert_eq(efuse_burn_field(e, "DIS_DOWNLOAD_MODE", 1), -EACCES);
        cr_assert_eq(efuse_burn_secure_version(e, 3), -EACCES);
        cr_assert_eq(efuse_secure_version(e), 2);

        /* burn_key write-protected KEY_PURPOSE_0. */
        cr_assert_eq(efuse_burn_key(e, 0, key_a, EFUSE_KEY_PURPOSE_USER, false), 0);
        cr_assert_eq(efuse_burn_field(e, "KEY_PURPOSE_0", 8), -EACCES);
        cr_assert_eq(efuse_key_purpose(e, 0), EFUSE_KEY_PURPOSE_USER);
}

Test(efuse, secure_version_thermometer) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32S3);

        cr_assert_eq(efuse_secure_version(e), 0);
        cr_assert_eq(efuse_burn_secure_version(e, 3), 0);
        cr_assert_eq(field(e, "SECURE_VERSION"), 0x7);
        cr_assert_eq(efuse_burn_secure_version(e, 1), 0);      /* never lowers */
        cr_assert_eq(efuse_secure_version(e), 3);
        /* A hand-burned gap is kept; only new bits are added. */
        cr_assert_eq(efuse_burn_field(e, "SECURE_VERSION", 0x107), 0);
        cr_assert_eq(efuse_secure_version(e), 4);
        cr_assert_eq(efuse_burn_secure_version(e, 6), 0);
        cr_assert_eq(field(e, "SECURE_VERSION"), 0x11f);
        cr_assert_eq(efuse_secure_version(e), 6);
        cr_assert_eq(efuse_burn_secure_version(e, 16), 0);
        cr_assert_eq(field(e, "SECURE_VERSION"), 0xffff);
        cr_assert_eq(efuse_burn_secure_version(e, 17), -ERANGE);
}

Test(efuse, mac_byte_reversed) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        static const uint8_t mac[6] = { 0x24, 0x0a, 0xc4, 0x12, 0x34, 0x56 };
        static const uint8_t other[6] = { 0x24, 0x0a, 0xc4, 0x00, 0x00, 0x01 };
        uint8_t got[6], buf[EFUSE_FILE_SIZE];
        char val[64];

        cr_assert_eq(efuse_set_mac(e, mac), 0);
        efuse_get_mac(e, got);
        cr_assert_arr_eq(got, mac, 6);
        efuse_to_bytes(e, buf);
        /* BLOCK1 starts at file offset 24; last octet in bits 0..7. */
        for (int i = 0; i < 6; i++)
                cr_assert_eq(buf[24 + i], mac[5 - i]);
        cr_assert_eq(efuse_field_format_value(e, efuse_field_by_name(ESP_CHIP_ESP32C3, "MAC"), val, sizeof(val)), 0);
        cr_assert_str_eq(val, "24:0a:c4:12:34:56");
        cr_assert_eq(efuse_set_mac(e, mac), 0);
        cr_assert_eq(efuse_set_mac(e, other), -EPERM);
        efuse_get_mac(e, got);
        cr_assert_arr_eq(got, mac, 6);
}

Test(efuse, s3_field_positions) {
        const EfuseFieldInfo *c3 = efuse_field_by_name(ESP_CHIP_ESP32C3, "DIS_USB_JTAG");
        const EfuseFieldInfo *s3 = efuse_field_by_name(ESP_CHIP_ESP32S3, "DIS_USB_JTAG");

        cr_assert_eq(c3->start, 41);
        cr_assert_eq(s3->start, 118);
        cr_assert_not_null(efuse_field_by_name(ESP_CHIP_ESP32C3, "ERR_RST_ENABLE"));
        cr_assert_null(efuse_field_by_name(ESP_CHIP_ESP32S3, "ERR_RST_ENABLE"));
        cr_assert_eq(efuse_field_by_name(ESP_CHIP_ESP32S3, "KEY_PURPOSE_5")->start, 108);
        cr_assert_eq(efuse_field_by_name(ESP_CHIP_ESP32S3, "SECURE_VERSION")->start, 142);
        cr_assert_gt(efuse_field_count(ESP_CHIP_ESP32S3), 30);
        cr_assert_null(efuse_field_by_index(ESP_CHIP_ESP32S3, efuse_field_count(ESP_CHIP_ESP32S3)));
        /* Every field fits its block. */
        for (size_t i = 0; i < efuse_field_count(ESP_CHIP_ESP32C3); i++) {
                const EfuseFieldInfo *f = efuse_field_by_index(ESP_CHIP_ESP32C3, i);
                cr_assert_leq(f->start + f->len, f->block <= 1 ? 192u : 256u, "%s", f->name);
        }
}

Test(efuse, file_round_trip_and_bad_files, .init = setup_tmp, .fini = teardown_tmp) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        uint8_t a[EFUSE_FILE_SIZE], b[EFUSE_FILE_SIZE];
        char path[128], err[256] = "";
        Efuse *l = NULL;
        static const uint8_t mac[6] = { 1, 2, 3, 4, 5, 6 };

        snprintf(path, sizeof(path), "%s/efuse.bin", tmpdir);
        cr_assert_eq(efuse_burn_key(e, 4, key_a, EFUSE_KEY_PURPOSE_HMAC_UP, true), 0);
        cr_assert_eq(efuse_set_mac(e, mac), 0);
        cr_assert_eq(efuse_burn_secure_version(e, 5), 0);
        cr_assert_eq(efuse_save(e, path), 0);
        cr_assert_eq(efuse_load(path, ESP_CHIP_ESP32C3, &l, err, sizeof(err)), 0, "%s", err);
        efuse_to_bytes(e, a);
        efuse_to_bytes(l, b);
        cr_assert_arr_eq(a, b, sizeof(a));
        cr_assert_eq(efuse_chip(l), ESP_CHIP_ESP32C3);
        l = efuse_free(l);

        /* Missing. */
        char missing[160];
        snprintf(missing, sizeof(missing), "%s/none.bin", tmpdir);
        cr_assert_eq(efuse_load(missing, ESP_CHIP_ESP32C3, &l, err, sizeof(err)), -ENOENT);
        cr_assert(strstr(err, "none.bin"), "err: %s", err);

        /* Wrong sizes. */
        cr_assert_eq(write_file_atomic(path, a, 512, 0600), 0);
        cr_assert_eq(efuse_load(path, ESP_CHIP_ESP32C3, &l, err, sizeof(err)), -EBADMSG);
        cr_assert(strstr(err, "1024") && strstr(err, "512") && strstr(err, "efuse.bin"), "err: %s", err);
        uint8_t big[2048] = { 0 };
        cr_assert_eq(write_file_atomic(path, big, sizeof(big), 0600), 0);
        cr_assert_eq(efuse_load(path, ESP_CHIP_ESP32C3, &l, err, sizeof(err)), -EBADMSG);
        cr_assert(strstr(err, "1024"), "err: %s", err);
        cr_assert_null(l);

        /* Garbage: random-looking bytes past the registers, undefined purposes. */
        memcpy(b, a, sizeof(b));
        b[900] = 0x5a;
        cr_assert_eq(efuse_from_bytes(ESP_CHIP_ESP32C3, b, sizeof(b), &l, err, sizeof(err)), -EBADMSG);
        cr_assert(strstr(err, "900"), "err: %s", err);
        memset(b, 0xff, sizeof(b));
        cr_assert_eq(efuse_from_bytes(ESP_CHIP_ESP32C3, b, sizeof(b), &l, err, sizeof(err)), -EBADMSG);
        memcpy(b, a, sizeof(b));
        b[11] |= 0xc0;                 /* KEY_PURPOSE_1 = 12 or more */
        cr_assert_eq(efuse_from_bytes(ESP_CHIP_ESP32C3, b, sizeof(b), &l, err, sizeof(err)), -EBADMSG);
        cr_assert(strstr(err, "KEY_PURPOSE_1"), "err: %s", err);
        /* An S3 XTS_256 purpose is garbage for a C3. */
        memset(b, 0, sizeof(b));
        b[11] = 0x20;
        cr_assert_eq(efuse_from_bytes(ESP_CHIP_ESP32C3, b, sizeof(b), &l, err, sizeof(err)), -EBADMSG);
        cr_assert_eq(efuse_from_bytes(ESP_CHIP_ESP32S3, b, sizeof(b), &l, err, sizeof(err)), 0);
        cr_assert_eq(efuse_key_purpose(l, 1), EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1);
        efuse_free(l);
}

Test(efuse, summary_formats) {
        _cleanup_(efuse_freep) Efuse *e = new_efuse(ESP_CHIP_ESP32C3);
        char val[128];

        cr_assert_eq(efuse_burn_key(e, 1, key_a, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        cr_assert_eq(efuse_burn_field(e, "SPI_BOOT_CRYPT_CNT", 1), 0);
        for (size_t i = 0; i < efuse_field_count(ESP_CHIP_ESP32C3); i++) {
                const EfuseFieldInfo *f = efuse_field_by_index(ESP_CHIP_ESP32C3, i);
                cr_assert_eq(efuse_field_format_value(e, f, val, sizeof(val)), 0, "%s", f->name);
                if (streq(f->name, "KEY_PURPOSE_1"))
                        cr_assert_str_eq(val, "HMAC_DOWN_DIGITAL_SIGNATURE");
                else if (streq(f->name, "KEY_PURPOSE_0"))
                        cr_assert_str_eq(val, "USER");
                else if (streq(f->name, "SPI_BOOT_CRYPT_CNT"))
                        cr_assert_str_eq(val, "Enable");
                else if (streq(f->name, "SECURE_BOOT_EN"))
                        cr_assert_str_eq(val, "False");
        }
        cr_assert_eq(efuse_field_format_value(e, efuse_field_by_name(ESP_CHIP_ESP32C3, "BLOCK_KEY1"), val, 10),
                     -ENOBUFS);
}
