/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <unistd.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "flash/partition-table.h"

#define PT_VECTORS VECTORS_DIR "/partition-table/"

static void read_vector(const char *name, uint8_t **data, size_t *size) {
        char path[512];
        snprintf(path, sizeof(path), PT_VECTORS "%s", name);
        cr_assert_eq(read_full_file(path, 1 << 20, data, size), 0, "cannot read %s", path);
}

static void check_csv_to_bin(const char *name) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        _cleanup_free_ uint8_t *golden = NULL;
        uint8_t bin[PARTITION_TABLE_MAX_LEN];
        char path[512], err[512] = "";
        size_t size;

        snprintf(path, sizeof(path), PT_VECTORS "%s.csv", name);
        cr_assert_eq(partition_table_load_csv(path, &t, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(partition_table_to_binary(t, bin), 0);

        snprintf(path, sizeof(path), "%s.bin", name);
        read_vector(path, &golden, &size);
        cr_assert_eq(size, sizeof(bin), "vector length %zu", size);
        cr_assert_arr_eq(bin, golden, size, "%s.csv does not give the bytes of gen_esp32part.py", name);
}

Test(partition_table, csv_to_bin_golden) {
        check_csv_to_bin("two_ota");
        check_csv_to_bin("espfleet_example");
}

static void check_bin_to_csv(const char *name, const char *expected) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL, *t2 = NULL;
        _cleanup_free_ uint8_t *golden = NULL;
        _cleanup_free_ char *csv = NULL;
        uint8_t bin[PARTITION_TABLE_MAX_LEN];
        char path[512], err[512] = "";
        size_t size;

        snprintf(path, sizeof(path), "%s.bin", name);
        read_vector(path, &golden, &size);
        cr_assert_eq(partition_table_from_binary(golden, size, &t, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(partition_table_to_csv(t, &csv), 0);
        cr_assert_str_eq(csv, expected);

        /* And back: the printed CSV gives the same binary. */
        cr_assert_eq(partition_table_from_csv(csv, "printed.csv", &t2, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(partition_table_to_binary(t2, bin), 0);
        cr_assert_arr_eq(bin, golden, size);
}

Test(partition_table, bin_to_csv_golden) {
        check_bin_to_csv("two_ota",
                         "# ESP-IDF Partition Table\n"
                         "# Name, Type, SubType, Offset, Size, Flags\n"
                         "nvs,data,nvs,0x9000,16K,\n"
                         "otadata,data,ota,0xd000,8K,\n"
                         "phy_init,data,phy,0xf000,4K,\n"
                         "factory,app,factory,0x10000,1M,\n"
                         "ota_0,app,ota_0,0x110000,1M,\n"
                         "ota_1,app,ota_1,0x210000,1M,\n");
        check_bin_to_csv("espfleet_example",
                         "# ESP-IDF Partition Table\n"
                         "# Name, Type, SubType, Offset, Size, Flags\n"
                         "nvs,data,nvs,0x9000,24K,\n"
                         "otadata,data,ota,0xf000,8K,\n"
                         "phy_init,data,phy,0x11000,4K,\n"
                         "esp_secure_cert,63,6,0x12000,8K,encrypted\n"
                         "nvs_key,data,nvs_keys,0x14000,4K,encrypted\n"
                         "ota_0,app,ota_0,0x20000,1536K,\n"
                         "ota_1,app,ota_1,0x1a0000,1536K,\n");
}

Test(partition_table, default_layout) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        _cleanup_free_ uint8_t *file = NULL, *golden = NULL;
        uint8_t bin[PARTITION_TABLE_MAX_LEN];
        char err[512] = "";
        size_t size;

        /* etc/partitions.csv is the built-in default, byte for byte. */
        cr_assert_eq(read_full_file(SOURCE_DIR "/etc/partitions.csv", 1 << 20, &file, &size), 0);
        cr_assert_str_eq((char *) file, partition_table_default_csv());

        cr_assert_eq(partition_table_from_csv(partition_table_default_csv(), "default", &t, err, sizeof(err)), 0, "%s",
                     err);
        cr_assert_eq(partition_table_to_binary(t, bin), 0);
        read_vector("espfleet_example.bin", &golden, &size);
        cr_assert_arr_eq(bin, golden, sizeof(bin));

        cr_assert_eq(partition_table_count(t), 7);
        cr_assert_eq(partition_table_ota_count(t), 2);
        cr_assert_eq(partition_table_end(t), 0x320000);
        cr_assert_leq(partition_table_end(t), FLASH_DEFAULT_SIZE);

        const Partition *p = partition_table_find(t, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_NVS);
        cr_assert_not_null(p);
        cr_assert_str_eq(p->name, "nvs");
        cr_assert_eq(p->offset, 0x9000);
        cr_assert_eq(p->size, 0x6000);

        p = partition_table_find(t, PARTITION_TYPE_ESP_SECURE_CERT, PARTITION_SUBTYPE_ANY);
        cr_assert_not_null(p);
        cr_assert_str_eq(p->name, "esp_secure_cert");
        cr_assert_eq(p->subtype, PARTITION_SUBTYPE_DATA_UNDEFINED);
        cr_assert_eq(p->flags, PARTITION_FLAG_ENCRYPTED);

        p = partition_table_find_ota(t, 1);
        cr_assert_not_null(p);
        cr_assert_eq(p->offset, 0x1A0000);
        cr_assert_null(partition_table_find_ota(t, 2));
        cr_assert_null(partition_table_find(t, PARTITION_TYPE_APP, PARTITION_SUBTYPE_APP_FACTORY));

        p = partition_table_find_by_name(t, "otadata");
        cr_assert_not_null(p);
        cr_assert_eq(p->subtype, PARTITION_SUBTYPE_DATA_OTA);
        cr_assert_eq(p->line, 4);
        cr_assert_null(partition_table_find_by_name(t, "factory"));
        cr_assert_null(partition_table_get(t, 7));
        cr_assert_str_eq(partition_table_get(t, 6)->name, "ota_1");
}

Test(partition_table, csv_syntax) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL;
        char err[512] = "";

        /* Uncommented header, upper-case keywords, K/M suffixes, auto
         * offsets after an explicit one, a negative size ("up to"), flags. */
        cr_assert_eq(partition_table_from_csv("Name, Type, SubType, Offset, Size, Flags\n"
                                              "\n"
                                              "   # indented comment\n"
                                              "nvs, DATA, NVS, 0x9000, 24K\r\n"
                                              "cfg, data, 0x40, , 4k, readonly:encrypted\n"
                                              "app0, app, ota_0, , 1M\n"
                                              "fs, data, spiffs, , -0x400000\n",
                                              "ok.csv", &t, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(partition_table_count(t), 4);
        const Partition *p = partition_table_find_by_name(t, "cfg");
        cr_assert_eq(p->offset, 0xF000);
        cr_assert_eq(p->size, 0x1000);
        cr_assert_eq(p->subtype, 0x40);
        cr_assert_eq(p->flags, PARTITION_FLAG_ENCRYPTED | PARTITION_FLAG_READONLY);
        p = partition_table_find_by_name(t, "app0");
        cr_assert_eq(p->offset, 0x10000);
        cr_assert_eq(p->size, 0x100000);
        p = partition_table_find_by_name(t, "fs");
        cr_assert_eq(p->offset, 0x110000);
        cr_assert_eq(p->size, 0x400000 - 0x110000);
        cr_assert_eq(partition_table_ota_count(t), 1);

        _cleanup_free_ char *csv = NULL;
        cr_assert_eq(partition_table_to_csv(t, &csv), 0);
        cr_assert_not_null(strstr(csv, "cfg,data,64,0xf000,4K,encrypted:readonly\n"), "%s", csv);
        cr_assert_not_null(strstr(csv, "fs,data,spiffs,0x110000,3008K,\n"), "%s", csv);
}

static const struct {
        const char *csv;
        const char *message;   /* expected substring, including "bad.csv:LINE:" */
} bad_csvs[] = {
        { "nvs,,nvs,0x9000,0x6000\n", "bad.csv:1: Field 'type' can't be left empty." },
        { "# c\nnvs,blob,nvs,0x9000,0x6000\n", "bad.csv:2: Value 'blob' is not valid for type. Known keywords: bootloader, partition_table, app, data" },
        { "x,app,ota_99,,1M\n", "bad.csv:1: Value 'ota_99' is not valid for subtype" },
        { "x,0x40,nvs,,1M\n", "bad.csv:1: Invalid subtype 'nvs': not a number" },
        { "x,0x1ff,,,1M\n", "bad.csv:1: type '0x1ff' is out of range" },
        { "x,app,,,1M\n", "bad.csv:1: App partition cannot have an empty subtype" },
        { "x,data,nvs,0x9000\n", "bad.csv:1: Size field can't be empty" },
        { "x,data,nvs,0x9000,12q\n", "bad.csv:1: Invalid size '12q'" },
        { "x,data,nvs,0x9000,0\n", "bad.csv:1: Size must not be zero" },
        { "x,data,nvs,zz,0x1000\n", "bad.csv:1: Invalid offset 'zz'" },
        { "x,data,nvs,0x9000,0x1000,secret\n", "bad.csv:1: CSV flag column contains unknown flag 'secret'" },
        { "x,data,nvs,0x9000,0x1000,encrypted: readonly\n", "unknown flag ' readonly'" },
        { "x,data,nvs,0x8000,0x1000\n", "bad.csv:1: Partitions overlap. Partition sets offset 0x8000. But partition table occupies the whole sector 0x8000. Use a free offset 0x9000 or higher." },
        { "a,data,nvs,0x9000,0x2000\nb,data,nvs,0xa000,0x1000\n", "bad.csv:2: Partitions overlap. Partition sets offset 0xa000. Previous partition ends 0xb000" },
        { "a,app,factory,0x21000,1M\n", "bad.csv:1: Partition a invalid: Offset 0x21000 is not aligned to 0x10000" },
        { "a,data,nvs,0x9100,0x1000\n", "bad.csv:1: Partition a invalid: Offset 0x9100 is not aligned to 0x1000" },
        { "a,app,factory,,0x1800\n", "bad.csv:1: Partition a invalid: Size 0x1800 is not aligned to 0x1000" },
        { "otadata,data,ota,,0x1000\n", "bad.csv:1: otadata partition 'otadata' must have size = 0x2000" },
        { "o1,data,ota,,0x2000\no2,data,ota,,0x2000\n", "bad.csv:2: Found multiple otadata partitions" },
        { "nvs,data,nvs,,0x3000\n\nnvs,data,nvs,,0x3000\n", "bad.csv:3: Partition names must be unique: 'nvs' is already used at line 1" },
        /* gen_esp32part.py: NVS_RW_MIN_PARTITION_SIZE (a read-only one may be smaller) */
        { "nvs,data,nvs,0x9000,0x2000\n", "bad.csv:1: Partition nvs invalid: 'nvs' partition of type 1 and subtype 2 of this size (0x2000) must be flagged as 'readonly' (the size of read/write NVS has to be at least 0x3000)" },
        { "a_very_long_name_x,data,nvs,,0x1000\n", "bad.csv:1: Partition name 'a_very_long_name_x' is longer than 16 characters" },
        { ",data,nvs,,0x1000\n", "bad.csv:1: Partition name is empty" },
        { "otadata,data,ota,,0x2000,readonly\n", "is always read-write and cannot be read-only" },
        { "boot,bootloader,primary,,\n", "bad.csv:1: Bootloader partitions are not supported" },
        { "x,data,nvs,$OFFSET,0x1000\n", "bad.csv:1: Environment variables are not supported" },
        { "x,data,nvs,0xffff0000,0x20000\n", "does not fit below 4 GiB" },
        { "x,data,nvs,0x9000,010\n", "bad.csv:1: Invalid size '010'" },
        { "# mac\rnvs,data,nvs,,0x3000\r\rnvs,data,nvs,,0x3000\r", "bad.csv:4: Partition names must be unique" },
};

Test(partition_table, bad_csv_messages) {
        for (size_t i = 0; i < ELEMENTSOF(bad_csvs); i++) {
                PartitionTable *t = NULL;
                char err[512] = "";
                int r;

                r = partition_table_from_csv(bad_csvs[i].csv, "bad.csv", &t, err, sizeof(err));
                cr_expect_eq(r, -EINVAL, "case %zu (%s) returned %d", i, bad_csvs[i].csv, r);
                cr_expect_null(t);
                cr_expect_not_null(strstr(err, bad_csvs[i].message), "case %zu: got '%s', want '%s'", i, err,
                                   bad_csvs[i].message);
                partition_table_free(t);
        }
}

Test(partition_table, too_many_entries) {
        _cleanup_free_ char *csv = NULL;
        size_t len = 0, alloc = 0;
        FILE *f = open_memstream(&csv, &alloc);
        PartitionTable *t = NULL;
        char err[512] = "";

        cr_assert_not_null(f);
        for (unsigned i = 0; i < PARTITION_TABLE_MAX_ENTRIES + 1; i++)
                fprintf(f, "p%u,data,nvs,,0x1000\n", i);
        fclose(f);
        (void) len;
        cr_assert_eq(partition_table_from_csv(csv, "many.csv", &t, err, sizeof(err)), -EINVAL);
        cr_assert_not_null(strstr(err, "many.csv:95: Too many partitions"), "%s", err);
}

Test(partition_table, missing_file) {
        PartitionTable *t = NULL;
        char err[512] = "";
        cr_assert_eq(partition_table_load_csv("/nonexistent/parts.csv", &t, err, sizeof(err)), -ENOENT);
        cr_assert_not_null(strstr(err, "/nonexistent/parts.csv"), "%s", err);
}

static void expect_bad_binary(const uint8_t *data, size_t len, const char *message) {
        PartitionTable *t = NULL;
        char err[512] = "";
        int r = partition_table_from_binary(data, len, &t, err, sizeof(err));
        cr_expect_eq(r, -EBADMSG, "got %d (%s)", r, err);
        cr_expect_null(t);
        cr_expect_not_null(strstr(err, message), "got '%s', want '%s'", err, message);
}

Test(partition_table, corrupted_binary) {
        _cleanup_free_ uint8_t *golden = NULL;
        uint8_t bin[PARTITION_TABLE_MAX_LEN];
        size_t size;

        read_vector("two_ota.bin", &golden, &size);

        /* A flipped byte in an entry: the MD5 record no longer matches. */
        memcpy(bin, golden, sizeof(bin));
        bin[0x24] ^= 0x01;
        expect_bad_binary(bin, sizeof(bin), "MD5 checksums don't match! (computed: 0x");

        /* A flipped byte in the MD5 itself. */
        memcpy(bin, golden, sizeof(bin));
        bin[0xC0 + 20] ^= 0x80;
        expect_bad_binary(bin, sizeof(bin), "MD5 checksums don't match!");

        /* Bad magic in the second entry. */
        memcpy(bin, golden, sizeof(bin));
        bin[0x20] = 0xAB;
        expect_bad_binary(bin, sizeof(bin), "Invalid magic bytes (ab 50) for partition definition 1 at 0x20");

        /* Truncated: not a multiple of 32 bytes, and no end marker. */
        expect_bad_binary(golden, 100, "must be a multiple of 32 bytes");
        expect_bad_binary(golden, 0xC0, "missing an end-of-table marker");

        /* Overlapping entries, with a valid MD5: caught by validation. */
        memcpy(bin, golden, sizeof(bin));
        le32_write(bin + 0x20 + 4, 0xA000);   /* otadata inside nvs */
        unsigned n = 0;
        cr_assert_eq(EVP_Digest(bin, 0xC0, bin + 0xC0 + 16, &n, EVP_md5(), NULL), 1);
        expect_bad_binary(bin, sizeof(bin), "Partition otadata at 0xa000 overlaps nvs 0x9000-0xcfff");
}

Test(partition_table, flash_roundtrip) {
        _cleanup_(partition_table_freep) PartitionTable *t = NULL, *back = NULL;
        _cleanup_(flash_closep) Flash *f = NULL, *small = NULL;
        char dir[] = "/tmp/test-pt-XXXXXX", path[256], path2[256], err[512] = "";
        uint8_t a[PARTITION_TABLE_MAX_LEN], b[PARTITION_TABLE_MAX_LEN], tail[PARTITION_TABLE_SECTOR_SIZE - PARTITION_TABLE_MAX_LEN];
        FlashRegion r;

        cr_assert_not_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/flash.bin", dir);
        snprintf(path2, sizeof(path2), "%s/small.bin", dir);
        cr_assert_eq(flash_open(path, FLASH_OPEN_CREATE, FLASH_DEFAULT_SIZE, &f), 0);

        cr_assert_eq(partition_table_load(f, &back, err, sizeof(err)), -ESP_ERR_NOT_FOUND);
        cr_assert_not_null(strstr(err, "no partition table at 0x8000"), "%s", err);

        cr_assert_eq(partition_table_from_csv(partition_table_default_csv(), "default", &t, err, sizeof(err)), 0);
        cr_assert_eq(partition_table_write(f, t), 0);
        /* Writing it twice works too (the sector is erased first). */
        cr_assert_eq(partition_table_write(f, t), 0);
        cr_assert_eq(partition_table_load(f, &back, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(partition_table_to_binary(t, a), 0);
        cr_assert_eq(partition_table_to_binary(back, b), 0);
        cr_assert_arr_eq(a, b, sizeof(a));
        cr_assert_eq(flash_read(f, PARTITION_TABLE_OFFSET, b, sizeof(b)), 0);
        cr_assert_arr_eq(a, b, sizeof(a));
        cr_assert_eq(flash_read(f, PARTITION_TABLE_OFFSET + PARTITION_TABLE_MAX_LEN, tail, sizeof(tail)), 0);
        for (size_t i = 0; i < sizeof(tail); i++)
                cr_assert_eq(tail[i], 0xFF);

        cr_assert_eq(partition_table_region(back, f, "ota_1", &r), 0);
        cr_assert_eq(r.flash, f);
        cr_assert_eq(r.offset, 0x1A0000);
        cr_assert_eq(r.size, 0x180000);
        cr_assert_eq(partition_table_region(back, f, "factory", &r), -ESP_ERR_NOT_FOUND);
        r = partition_region(f, partition_table_find_by_name(back, "otadata"));
        cr_assert_eq(r.offset, 0xF000);
        cr_assert_eq(r.size, OTADATA_PARTITION_SIZE);

        /* A corrupted table on flash: a clear error naming the image. */
        uint8_t zero = 0;
        cr_assert_eq(flash_write(f, PARTITION_TABLE_OFFSET + 0x30, &zero, 1), 0);
        partition_table_free(TAKE_PTR(back));
        cr_assert_eq(partition_table_load(f, &back, err, sizeof(err)), -EBADMSG);
        cr_assert_not_null(strstr(err, "flash.bin: partition table at 0x8000: MD5 checksums don't match"), "%s", err);

        /* A table that does not fit in a 2 MiB flash is refused, nothing written. */
        cr_assert_eq(flash_open(path2, FLASH_OPEN_CREATE, 2 * 1024 * 1024, &small), 0);
        cr_assert_eq(partition_table_write(small, t), -ERANGE);
        cr_assert_eq(flash_write_count(small), 0);

        unlink(path);
        unlink(path2);
        rmdir(dir);
}

/* Mangled inputs give an error or a table, never a crash (run under ASan). */
Test(partition_table, mangled_inputs) {
        static const char *tokens[] = { "nvs", "data", "app", "ota_0", "0x9000", "", " ", "1M", "-1", "0x", "K",
                                        "encrypted", ":", ",", "#", "\n", "0x3F", "99999999999999999999", "\t",
                                        "readonly", "ota", "0x2000", "factory", "-0x10000" };
        _cleanup_free_ uint8_t *golden = NULL;
        uint32_t seed = 12345;
        size_t size;

        read_vector("espfleet_example.bin", &golden, &size);
        for (unsigned round = 0; round < 300; round++) {
                uint8_t bin[PARTITION_TABLE_MAX_LEN];
                char csv[512] = "", err[512];
                PartitionTable *t = NULL;
                int r;

                memcpy(bin, golden, sizeof(bin));
                for (unsigned k = 0; k < 1 + round % 4; k++) {
                        seed = seed * 1103515245u + 12345u;
                        bin[(seed >> 8) % 0x100] ^= (uint8_t) (1u << (seed % 8));
                }
                if (round % 2) {
                        unsigned n = 0;
                        EVP_Digest(bin, 0xE0, bin + 0xE0 + 16, &n, EVP_md5(), NULL);
                }
                err[0] = 0;
                r = partition_table_from_binary(bin, sizeof(bin), &t, err, sizeof(err));
                cr_assert(r == 0 || r == -EBADMSG, "round %u: %d", round, r);
                cr_assert(r == 0 || *err, "round %u: no message", round);
                t = partition_table_free(t);

                for (unsigned k = 0; k < 12; k++) {
                        seed = seed * 1103515245u + 12345u;
                        strncat(csv, tokens[(seed >> 8) % ELEMENTSOF(tokens)], sizeof(csv) - strlen(csv) - 1);
                }
                err[0] = 0;
                r = partition_table_from_csv(csv, "fuzz.csv", &t, err, sizeof(err));
                cr_assert(r == 0 || r == -EINVAL, "round %u: %d", round, r);
                cr_assert(r == 0 || strncmp(err, "fuzz.csv", 8) == 0, "round %u: '%s'", round, err);
                partition_table_free(t);
        }
}

/* A read-only NVS may be below 0x3000 (gen_esp32part accepts it). */
Test(partition_table, small_readonly_nvs) {
        PartitionTable *t = NULL;
        char err[512] = "";

        cr_assert_eq(partition_table_from_csv("nvs,data,nvs,0x9000,0x1000,readonly\n", "ro.csv", &t, err, sizeof err), 0,
                     "%s", err);
        partition_table_free(t);
}

/* A table that ends past the chip's flash is refused with gen_esp32part's words. */
Test(partition_table, fits_flash) {
        PartitionTable *t = NULL;
        char err[512] = "";

        cr_assert_eq(partition_table_from_csv("nvs,data,nvs,0x9000,0x6000\nbig,data,fat,0x3f0000,0x20000\n", "big.csv", &t,
                                              err, sizeof err), 0, "%s", err);
        cr_assert_eq(partition_table_verify_fits(t, 4 * 1024 * 1024, err, sizeof err), -EFBIG);
        cr_assert_str_eq(err, "Partitions tables occupies 4.1MB of flash (4259840 bytes) which does not fit in available "
                              "flash size 4MB.");
        cr_assert_eq(partition_table_verify_fits(t, 8 * 1024 * 1024, err, sizeof err), 0);
        partition_table_free(t);
}
