/* SPDX-License-Identifier: MIT */
#pragma once

/* A throwaway emulated device for the boot and OTA writer tests: a 4 MiB
 * sparse flash in a temp dir, the default partition table, a C3 eFuse with
 * secure boot enabled (DIGEST0 = key A), and real images from the image
 * builder, signed with generated keys. */

#include <criterion/criterion.h>
#include <openssl/evp.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "dsemu/efuse.h"
#include "flash/flash.h"
#include "flash/otadata.h"
#include "flash/partition-table.h"
#include "image/app-image.h"
#include "image/sbv2.h"
#include "ota/boot.h"

typedef struct Dev {
        char dir[64];
        char flash_path[96];
        Flash *flash;
        PartitionTable *table;
        Efuse *efuse;
} Dev;

/* Keys made once per test process: A is trusted (DIGEST0), B is a second
 * trusted key (DIGEST1, burned by tests that need it), C is never trusted. */
static EVP_PKEY *key_a, *key_b, *key_c;
static uint8_t digest_a[32], digest_b[32];

static void fixture_keys(void) {
        if (key_a)
                return;
        cr_assert_eq(sbv2_generate_key(SBV2_KEY_ECDSA256, &key_a), 0);
        cr_assert_eq(sbv2_generate_key(SBV2_KEY_ECDSA256, &key_b), 0);
        cr_assert_eq(sbv2_generate_key(SBV2_KEY_ECDSA256, &key_c), 0);
        cr_assert_eq(sbv2_key_digest(key_a, digest_a), 0);
        cr_assert_eq(sbv2_key_digest(key_b, digest_b), 0);
}

static void dev_open(Dev *d, bool secure_boot) {
        char err[256] = "";

        fixture_keys();
        snprintf(d->dir, sizeof d->dir, "/tmp/test-ota.XXXXXX");
        cr_assert_not_null(mkdtemp(d->dir));
        snprintf(d->flash_path, sizeof d->flash_path, "%s/flash.bin", d->dir);
        cr_assert_eq(flash_open(d->flash_path, FLASH_OPEN_CREATE, FLASH_DEFAULT_SIZE, &d->flash), 0);
        cr_assert_eq(partition_table_from_csv(partition_table_default_csv(), "default", &d->table, err, sizeof err), 0,
                     "%s", err);
        cr_assert_geq(partition_table_ota_count(d->table), 2);
        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &d->efuse), 0);
        if (secure_boot) {
                cr_assert_eq(efuse_burn_key(d->efuse, 0, digest_a, EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0, false), 0);
                cr_assert_eq(efuse_burn_field(d->efuse, "SECURE_BOOT_EN", 1), 0);
        }
}

static void dev_close(Dev *d) {
        char cmd[128];

        flash_close(d->flash);
        partition_table_free(d->table);
        efuse_free(d->efuse);
        snprintf(cmd, sizeof cmd, "rm -rf %.*s", (int) sizeof d->dir, d->dir);
        cr_assert_eq(system(cmd), 0);
}

typedef struct ImageSpec {
        const char *version;
        uint32_t secure_version;
        AppBehaviour behaviour;
        uint16_t chip_id;          /* 0 = C3 */
        EVP_PKEY *key;             /* NULL = unsigned */
        uint64_t size;             /* 0 = small */
} ImageSpec;

/* Builds (and signs) an image; *ret is malloc()ed. */
static void make_image(const ImageSpec *s, uint8_t **ret, size_t *ret_len) {
        AppImageParams p = {
                .chip_id = s->chip_id ?: ESP_CHIP_ID_ESP32C3,
                .version = s->version,
                .secure_version = s->secure_version,
                .behaviour = s->behaviour,
                .size = s->size,
        };
        uint8_t *img = NULL, *signed_img = NULL;
        size_t len = 0, signed_len = 0;
        char err[256] = "";

        cr_assert_eq(app_image_build(&p, &img, &len, err, sizeof err), 0, "%s", err);
        if (!s->key) {
                *ret = img;
                *ret_len = len;
                return;
        }
        cr_assert_eq(sbv2_sign_file(s->key, img, len, &signed_img, &signed_len, err, sizeof err), 0, "%s", err);
        free(img);
        *ret = signed_img;
        *ret_len = signed_len;
}

static FlashRegion slot_region(Dev *d, unsigned slot) {
        const Partition *p = partition_table_find_ota(d->table, slot);
        cr_assert_not_null(p);
        return partition_region(d->flash, p);
}

/* Writes raw bytes into ota_<slot> (erasing what it covers). */
static void put_bytes(Dev *d, unsigned slot, const uint8_t *data, size_t len) {
        FlashRegion r = slot_region(d, slot);

        /* one sector more: no stale signature sector of an earlier, longer image */
        cr_assert_eq(flash_region_erase(&r, 0, ALIGN_TO(len, FLASH_SECTOR_SIZE) + FLASH_SECTOR_SIZE), 0);
        cr_assert_eq(flash_region_write(&r, 0, data, len), 0);
}

_unused_ static void put_image(Dev *d, unsigned slot, const ImageSpec *s) {
        _cleanup_free_ uint8_t *img = NULL;
        size_t len;

        make_image(s, &img, &len);
        put_bytes(d, slot, img, len);
}

_unused_ static FlashRegion otadata_region(Dev *d) {
        const Partition *p = partition_table_find(d->table, PARTITION_TYPE_DATA, PARTITION_SUBTYPE_DATA_OTA);
        cr_assert_not_null(p);
        return partition_region(d->flash, p);
}

_unused_ static bool log_has(const BootResult *r, const char *needle) {
        for (size_t i = 0; i < r->n_log; i++)
                if (strstr(r->log[i], needle))
                        return true;
        return false;
}

_unused_ static void log_dump(const BootResult *r) {
        for (size_t i = 0; i < r->n_log; i++)
                cr_log_info("%s", r->log[i]);
}
