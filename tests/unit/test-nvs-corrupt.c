/* SPDX-License-Identifier: MIT */
/* Corrupted input: flipped bytes, truncated images, wrong page CRCs, random
 * garbage, broken CSV. Every case gives a clear error or a repair, never a
 * crash, and a value that is still served is the original value. CI also
 * runs this binary under ASan and UBSan. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "nvs/nvs-internal.h"
#include "nvs/nvs.h"

#define NVS_VEC VECTORS_DIR "/nvs/"

static uint64_t rng_state = 0x243F6A8885A308D3u;

static uint32_t rnd(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return (uint32_t) (rng_state >> 16);
}

static uint8_t *load(const char *name, size_t *size) {
        char path[256];
        uint8_t *data = NULL;
        snprintf(path, sizeof path, NVS_VEC "%s", name);
        cr_assert_eq(read_full_file(path, 1 << 20, &data, size), 0);
        return data;
}

typedef struct Snapshot {
        unsigned n;
        struct {
                NvsEntryInfo info;
                NvsValue value;
        } items[64];
} Snapshot;

typedef struct Ctx {
        Nvs *nvs;
        Snapshot *snap;
} Ctx;

static int snap_cb(const NvsEntryInfo *info, void *userdata) {
        Ctx *c = userdata;
        NvsValue v = {};
        int r;

        r = nvs_get_value(c->nvs, info->namespace_name, info->key, &v);
        if (r < 0)
                return 0;   /* listed but unreadable (e.g. a blob whose chunk went): not served */
        cr_assert_lt(c->snap->n, ELEMENTSOF(c->snap->items));
        c->snap->items[c->snap->n].info = *info;
        c->snap->items[c->snap->n].value = v;
        c->snap->n++;
        return 0;
}

static void snapshot(Nvs *nvs, Snapshot *s) {
        Ctx c = { nvs, s };
        s->n = 0;
        cr_assert_eq(nvs_iterate(nvs, NULL, NVS_TYPE_ANY, snap_cb, &c), 0);
}

static void snapshot_done(Snapshot *s) {
        for (unsigned i = 0; i < s->n; i++)
                nvs_value_done(&s->items[i].value);
        s->n = 0;
}

static bool value_eq(const NvsValue *a, const NvsValue *b) {
        return a->type == b->type && a->u == b->u && a->i == b->i && a->size == b->size &&
               (a->size == 0 || memcmp(a->data, b->data, a->size) == 0);
}

/* Every value served from the damaged image is the golden one. */
static void check_subset(const Snapshot *golden, const Snapshot *got, const char *what) {
        for (unsigned i = 0; i < got->n; i++) {
                bool found = false;
                for (unsigned j = 0; j < golden->n; j++) {
                        if (!streq(golden->items[j].info.namespace_name, got->items[i].info.namespace_name) ||
                            !streq(golden->items[j].info.key, got->items[i].info.key))
                                continue;
                        cr_assert(value_eq(&golden->items[j].value, &got->items[i].value),
                                  "%s: key '%s' serves a changed value", what, got->items[i].info.key);
                        found = true;
                }
                cr_assert(found, "%s: key '%s' appeared from nowhere", what, got->items[i].info.key);
        }
}

static void flip_case(const char *image, const NvsXtsKeys *keys, unsigned rounds) {
        _cleanup_free_ uint8_t *orig = NULL;
        uint8_t *copy;
        size_t size = 0;
        Snapshot golden = {}, got = {};
        Nvs *nvs = NULL;

        orig = load(image, &size);
        cr_assert_eq(nvs_open_buffer(orig, size, keys, NVS_OPEN_READ_ONLY, &nvs), 0);
        snapshot(nvs, &golden);
        cr_assert_gt(golden.n, 0);
        nvs = nvs_close(nvs);

        copy = malloc(size);
        for (unsigned round = 0; round < rounds; round++) {
                unsigned flips = 1 + rnd() % 3;
                char what[96];
                int r;

                memcpy(copy, orig, size);
                /* most flips land in the used first pages, where the data is */
                for (unsigned k = 0; k < flips; k++) {
                        size_t at = rnd() % (round % 4 == 0 ? size : 3 * NVS_PAGE_SIZE);
                        copy[at] ^= (uint8_t) (1u << (rnd() % 8));
                }
                snprintf(what, sizeof what, "%s round %u", image, round);

                r = nvs_open_buffer(copy, size, keys, NVS_OPEN_READ_ONLY, &nvs);
                if (r == 0) {
                        snapshot(nvs, &got);
                        check_subset(&golden, &got, what);
                        snapshot_done(&got);
                        nvs = nvs_close(nvs);
                } else
                        cr_assert(r == -ESP_ERR_NVS_NEW_VERSION_FOUND, "%s: %s", what, esp_err_to_name(r));

                /* read-write: repaired, then still writable and consistent */
                r = nvs_open_buffer(copy, size, keys, 0, &nvs);
                if (r == 0) {
                        NvsHandle *h = NULL;
                        snapshot(nvs, &got);
                        check_subset(&golden, &got, what);
                        snapshot_done(&got);
                        cr_assert_eq(nvs_handle_open(nvs, "scratch", NVS_READWRITE, &h), 0, "%s", what);
                        cr_assert_eq(nvs_set_str(h, "after", "repair"), 0, "%s", what);
                        nvs_handle_close(h);
                        nvs = nvs_close(nvs);
                        cr_assert_eq(nvs_open_buffer(copy, size, keys, NVS_OPEN_READ_ONLY, &nvs), 0, "%s", what);
                        cr_assert_eq(nvs_repair_count(nvs), 0, "%s: a repaired image needs repairs again", what);
                        nvs = nvs_close(nvs);
                } else
                        cr_assert(r == -ESP_ERR_NVS_NEW_VERSION_FOUND || r == -ESP_ERR_NVS_NO_FREE_PAGES, "%s: %s",
                                  what, esp_err_to_name(r));
        }
        free(copy);
        snapshot_done(&golden);
}

Test(nvs_corrupt, flipped_bits_basic) { flip_case("basic.bin", NULL, 150); }
Test(nvs_corrupt, flipped_bits_types) { flip_case("types.bin", NULL, 150); }
Test(nvs_corrupt, flipped_bits_files) { flip_case("files.bin", NULL, 150); }

Test(nvs_corrupt, flipped_bits_encrypted) {
        NvsXtsKeys keys;
        char err[256];
        cr_assert_eq(nvs_keys_read_file(NVS_VEC "basic-enc.keys.bin", &keys, err, sizeof err), 0);
        flip_case("basic-enc.bin", &keys, 100);
}

Test(nvs_corrupt, truncated) {
        _cleanup_free_ uint8_t *img = NULL;
        size_t size = 0;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        uint8_t *blob = NULL;
        size_t len;

        img = load("files.bin", &size);
        cr_assert_eq(nvs_open_buffer(img, size - 100, NULL, NVS_OPEN_READ_ONLY, &nvs), -ESP_ERR_NVS_INVALID_LENGTH);
        cr_assert_eq(nvs_open_buffer(img, 0, NULL, NVS_OPEN_READ_ONLY, &nvs), -ESP_ERR_NVS_INVALID_LENGTH);
        cr_assert_eq(nvs_open_buffer(img, 4095, NULL, NVS_OPEN_READ_ONLY, &nvs), -ESP_ERR_NVS_INVALID_LENGTH);

        /* cut after page 1: the big blob lost its last chunk and its index */
        cr_assert_eq(nvs_open_buffer(img, 2 * NVS_PAGE_SIZE, NULL, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_gt(nvs_repair_count(nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "esp_ds_ns", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_blob_alloc(h, "big", &blob, &len), -ESP_ERR_NVS_NOT_FOUND);
        cr_assert_eq(nvs_get_blob_alloc(h, "blob1", &blob, &len), 0);
        cr_assert_eq(len, 300);
        free(blob);
        nvs_handle_close(h);
        nvs_close(nvs);

        /* read-write on two full pages: no free page, as nvs_flash_init says */
        cr_assert_eq(nvs_open_buffer(img, 2 * NVS_PAGE_SIZE, NULL, 0, &nvs), -ESP_ERR_NVS_NO_FREE_PAGES);
}

Test(nvs_corrupt, wrong_page_crc) {
        _cleanup_free_ uint8_t *img = NULL;
        size_t size = 0;
        Nvs *nvs = NULL;
        NvsHandle *h = NULL;
        NvsPageInfo pi;
        uint8_t u8;

        img = load("basic.bin", &size);
        img[28] ^= 0x55;   /* page 0 header CRC */
        cr_assert_eq(nvs_open_buffer(img, size, NULL, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_page_info(nvs, 0, &pi), 0);
        cr_assert_eq(pi.state, NVS_PAGE_CORRUPT);
        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READONLY, &h), -ESP_ERR_NVS_NOT_FOUND);
        nvs = nvs_close(nvs);

        /* read-write: the corrupt page is erased (as ESP-IDF does), the partition works */
        cr_assert_eq(nvs_open_buffer(img, size, NULL, 0, &nvs), 0);
        cr_assert_gt(nvs_repair_count(nvs), 0);
        cr_assert_eq(nvs_page_info(nvs, 0, &pi), 0);
        cr_assert_eq(pi.state, NVS_PAGE_UNINITIALIZED);
        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READWRITE, &h), 0);
        cr_assert_eq(nvs_set_u8(h, "use_url", 0), 0);
        cr_assert_eq(nvs_get_u8(h, "use_url", &u8), 0);
        cr_assert_eq(u8, 0);
        nvs_handle_close(h);
        nvs_close(nvs);

        /* an entry with a bad CRC is dropped, the rest of the page stays */
        free(img);
        img = load("basic.bin", &size);
        img[NVS_FIRST_ENTRY_OFFSET + 4 * NVS_ENTRY_SIZE + 24] ^= 1;   /* use_url's value */
        cr_assert_eq(nvs_open_buffer(img, size, NULL, NVS_OPEN_READ_ONLY, &nvs), 0);
        cr_assert_eq(nvs_handle_open(nvs, "secure_esp", NVS_READONLY, &h), 0);
        cr_assert_eq(nvs_get_u8(h, "use_url", &u8), -ESP_ERR_NVS_NOT_FOUND);
        uint32_t interval;
        cr_assert_eq(nvs_get_u32(h, "interval", &interval), 0);
        cr_assert_eq(interval, 10000);
        nvs_handle_close(h);
        nvs_close(nvs);

        /* a newer format version is refused, not misread */
        free(img);
        img = load("basic.bin", &size);
        nvs_header_init(img, NVS_STATE_ACTIVE, 0, 0xFD);
        cr_assert_eq(nvs_open_buffer(img, size, NULL, NVS_OPEN_READ_ONLY, &nvs), -ESP_ERR_NVS_NEW_VERSION_FOUND);
}

Test(nvs_corrupt, random_garbage) {
        uint8_t *img = malloc(0x6000);

        for (unsigned round = 0; round < 50; round++) {
                Nvs *nvs = NULL;
                for (size_t i = 0; i < 0x6000; i++)
                        img[i] = (uint8_t) rnd();
                /* make some headers look valid so that the entry parser gets garbage too */
                for (unsigned p = 0; p < 6; p += 1 + round % 2)
                        nvs_header_init(img + p * NVS_PAGE_SIZE, round % 3 ? NVS_STATE_FULL : NVS_STATE_ACTIVE, p,
                                        NVS_FORMAT_V2);
                int r = nvs_open_buffer(img, 0x6000, NULL, NVS_OPEN_READ_ONLY, &nvs);
                cr_assert_eq(r, 0, "%s", esp_err_to_name(r));
                Snapshot s = {};
                snapshot(nvs, &s);
                snapshot_done(&s);
                nvs = nvs_close(nvs);
                r = nvs_open_buffer(img, 0x6000, NULL, 0, &nvs);
                cr_assert(r == 0 || r == -ESP_ERR_NVS_NO_FREE_PAGES, "%s", esp_err_to_name(r));
                nvs_close(nvs);
        }
        free(img);
}

Test(nvs_corrupt, garbage_csv) {
        static const char *const bad[] = {
                "key,type,encoding,value\nns,namespace,,\n\"\n",
                "key,type,encoding,value\nns,namespace,,\nk,data,string,\"a\"b,c\n",
                "key,type,encoding,value\nns,namespace,,\nk,data,blob_fill(,0x00)\n",
                "key,type,encoding,value\nns,namespace,,\nk,data,blob_fill(99999999999999999999;0x00),\n",
                "key,type,encoding,value\nns,namespace,,\nk,data,blob_sz_fill(2;0xZZ),a\n",
                "key,type,encoding,value\nns,namespace,,\nk,data,base64,====\n",
                "key,type,encoding,value\nns,namespace,,\nk,data,i64,-9223372036854775809\n",
                "key,type,encoding,value\nns,namespace,,\nk,file,string,/nonexistent/x\n",
                "key,type,encoding,value\nns,namespace,,\nk,file,string,\n",
                ",,,\n,,,\n",
        };
        char err[512];

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ uint8_t *img = NULL;
                size_t n = 0;
                err[0] = 0;
                int r = nvs_generate_csv_text(bad[i], strlen(bad[i]), "bad.csv", NULL, 0x6000, 2, NULL, &img, &n,
                                              err, sizeof err);
                if (r >= 0)
                        continue;   /* Python's csv would accept some of these too */
                cr_assert(strneq(err, "bad.csv", 7), "case %zu: error '%s' does not name the file", i, err);
        }

        /* random bytes: an error or an image, never a crash */
        for (unsigned round = 0; round < 200; round++) {
                char csv[300];
                size_t len = 1 + rnd() % (sizeof csv - 1);
                _cleanup_free_ uint8_t *img = NULL;
                size_t n = 0;
                memcpy(csv, "key,type,encoding,value\nns,namespace,,\n", 39);
                for (size_t i = 39; i < len; i++) {
                        static const char alphabet[] = "ab,\"\n\r#0x1;()_-=datafilestringu8hex2bin";
                        csv[i] = alphabet[rnd() % (sizeof alphabet - 1)];
                }
                (void) nvs_generate_csv_text(csv, MAX(len, 39), "rnd.csv", NVS_VEC, 0x3000, 2, NULL, &img, &n, err,
                                             sizeof err);
        }
}
