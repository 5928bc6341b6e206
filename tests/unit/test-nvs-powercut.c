/* SPDX-License-Identifier: MIT */
/* Power-cut consistency (issue #4): the flash stops after its k-th write or
 * erase in the middle of a stream of updates; after reopening, every key
 * holds its old or its new value, never garbage, and later writes work. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "flash/flash.h"
#include "nvs/nvs.h"

#define N_KEYS 8
#define PART_SIZE 0x4000u     /* 4 pages: 3 for data, 1 reserved for GC */
#define N_CUTS 1000

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rnd(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return (uint32_t) (rng_state >> 16);
}

/* Key k's kind: 0 = u32, 1 = string, 2 = small blob, 3 = multi-chunk blob. */
static unsigned kind(unsigned k) {
        return k % 4;
}

static void key_name(unsigned k, char name[16]) {
        snprintf(name, 16, "key%u", k);
}

/* The value of key k at version v (v = 0: absent). */
static size_t value_for(unsigned k, unsigned v, uint8_t *buf) {
        uint32_t seed = k * 1000003u + v * 7919u;
        size_t len;

        switch (kind(k)) {
        case 0:
                memcpy(buf, &(uint32_t) { seed * 2654435761u }, 4);
                return 4;
        case 1:
                len = 1 + seed % 200;
                for (size_t i = 0; i < len; i++)
                        buf[i] = (uint8_t) ('a' + (seed + i) % 26);
                buf[len] = 0;
                return len;
        case 2:
                len = 1 + seed % 300;
                break;
        default:
                len = 1 + seed % 1500;
                break;
        }
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t) (seed * 31 + i * 7);
        return len;
}

static int apply(NvsHandle *h, unsigned k, unsigned v) {
        uint8_t buf[2048];
        char name[16];
        size_t len;

        key_name(k, name);
        if (v == 0) {
                int r = nvs_erase_key(h, name);
                return r == -ESP_ERR_NVS_NOT_FOUND ? 0 : r;   /* already absent */
        }
        len = value_for(k, v, buf);
        switch (kind(k)) {
        case 0:
                return nvs_set_u32(h, name, *(uint32_t *) buf);
        case 1:
                return nvs_set_str(h, name, (char *) buf);
        default:
                return nvs_set_blob(h, name, buf, len);
        }
}

/* Does key k hold exactly version v? */
static bool holds(NvsHandle *h, unsigned k, unsigned v) {
        uint8_t expect[2048];
        char name[16];
        size_t len;
        int r;

        key_name(k, name);
        if (v == 0) {
                NvsType t;
                return nvs_find_key(h, name, &t) == -ESP_ERR_NVS_NOT_FOUND;
        }
        len = value_for(k, v, expect);
        switch (kind(k)) {
        case 0: {
                uint32_t x;
                r = nvs_get_u32(h, name, &x);
                return r == 0 && memcmp(&x, expect, 4) == 0;
        }
        case 1: {
                _cleanup_free_ char *s = NULL;
                r = nvs_get_str_alloc(h, name, &s);
                return r == 0 && streq(s, (char *) expect);
        }
        default: {
                _cleanup_free_ uint8_t *b = NULL;
                size_t n = 0;
                r = nvs_get_blob_alloc(h, name, &b, &n);
                return r == 0 && n == len && memcmp(b, expect, n) == 0;
        }
        }
}

Test(nvs_powercut, random_cuts_during_updates, .timeout = 240) {
        char path[] = "/tmp/test-nvs-powercut-XXXXXX";
        unsigned committed[N_KEYS], next_version = 1, cuts_hit = 0, repairs = 0;
        Flash *f = NULL;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        int fd;

        fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        close(fd);
        unlink(path);
        cr_assert_eq(flash_open(path, FLASH_OPEN_CREATE, PART_SIZE, &f), 0);
        FlashRegion region = { .flash = f, .offset = 0, .size = PART_SIZE };

        cr_assert_eq(nvs_open_region(&region, NULL, 0, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "pc", NVS_READWRITE, &h), 0);
        for (unsigned k = 0; k < N_KEYS; k++) {
                committed[k] = next_version++;
                cr_assert_eq(apply(h, k, committed[k]), 0);
        }
        h = nvs_handle_close(h);
        nvs = nvs_close(nvs);

        for (unsigned iter = 0; iter < N_CUTS; iter++) {
                int pending_key = -1;
                unsigned pending_version = 0;
                int r;

                flash_set_power_cut(f, rnd() % 60);
                r = nvs_open_region(&region, NULL, 0, &nvs);
                if (r >= 0)
                        r = nvs_handle_open(nvs, "pc", NVS_READWRITE, &h);
                for (unsigned op = 0; r >= 0 && op < 40; op++) {
                        unsigned k = rnd() % N_KEYS;
                        unsigned v = rnd() % 10 == 0 ? 0 : next_version++;

                        r = apply(h, k, v);
                        if (r < 0) {
                                cr_assert(r == -EIO || r == -ESP_ERR_NVS_INVALID_STATE,
                                          "cut %u: update failed with %s, not the power cut", iter,
                                          esp_err_to_name(r));
                                pending_key = (int) k;
                                pending_version = v;
                        } else
                                committed[k] = v;
                }
                if (r < 0)
                        cuts_hit++;
                h = nvs_handle_close(h);
                nvs = nvs_close(nvs);
                flash_power_restore(f);

                /* power is back: the partition opens, repairs, and holds old or new values */
                r = nvs_open_region(&region, NULL, 0, &nvs);
                cr_assert_eq(r, 0, "cut %u: reopen failed: %s", iter, esp_err_to_name(r));
                repairs += nvs_repair_count(nvs);
                cr_assert_eq(nvs_handle_open(nvs, "pc", NVS_READWRITE, &h), 0);
                for (unsigned k = 0; k < N_KEYS; k++) {
                        if ((int) k == pending_key && holds(h, k, pending_version)) {
                                committed[k] = pending_version;
                                continue;
                        }
                        cr_assert(holds(h, k, committed[k]),
                                  "cut %u: key%u holds neither version %u nor the interrupted %u", iter, k,
                                  committed[k], (int) k == pending_key ? pending_version : committed[k]);
                }

                /* and it keeps working */
                unsigned k = rnd() % N_KEYS;
                unsigned v = next_version++;
                r = apply(h, k, v);
                cr_assert_eq(r, 0, "cut %u: write after reopen failed: %s", iter, esp_err_to_name(r));
                committed[k] = v;
                cr_assert(holds(h, k, v));
                h = nvs_handle_close(h);
                nvs = nvs_close(nvs);
        }

        /* the cuts did land mid-stream, and opening did have things to repair */
        cr_assert_gt(cuts_hit, N_CUTS / 2);
        cr_assert_gt(repairs, 0);
        flash_close(f);
        unlink(path);
}
