/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_IMAGE

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>

#include <openssl/evp.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "basic/string-table.h"
#include "image/app-image.h"
#include "basic/errmsg.h"

/* The espfleet behaviour marker at image offset 0x20 + 256 (where ESP-IDF
 * puts a custom app struct, esp-formats.md §5.3):
 *   0  8  "ESPFLEET"
 *   8  4  behaviour (LE32, AppBehaviour)
 *   12 4  ESP-CRC of bytes 0..11 (LE32) */
static const uint8_t marker_magic[8] = { 'E', 'S', 'P', 'F', 'L', 'E', 'E', 'T' };

static const char *const app_behaviour_table[_APP_BEHAVIOUR_MAX] = {
        [APP_BEHAVIOUR_OK] = "ok",
        [APP_BEHAVIOUR_NO_CONNECT] = "no-connect",
        [APP_BEHAVIOUR_BOOT_FAIL] = "boot-fail",
};

DEFINE_STRING_TABLE_LOOKUP(app_behaviour, AppBehaviour);

static const struct {
        uint16_t id;
        const char *name;
} chip_names[] = {
        { ESP_CHIP_ID_ESP32, "esp32" },
        { ESP_CHIP_ID_ESP32S2, "esp32s2" },
        { ESP_CHIP_ID_ESP32C3, "esp32c3" },
        { ESP_CHIP_ID_ESP32S3, "esp32s3" },
        { ESP_CHIP_ID_ESP32C2, "esp32c2" },
        { ESP_CHIP_ID_ESP32C6, "esp32c6" },
        { ESP_CHIP_ID_ESP32H2, "esp32h2" },
};

int esp_chip_id_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(chip_names); i++)
                if (streq(chip_names[i].name, s))
                        return chip_names[i].id;
        return -EINVAL;
}

const char *esp_chip_id_to_string(uint16_t id) {
        for (size_t i = 0; i < ELEMENTSOF(chip_names); i++)
                if (chip_names[i].id == id)
                        return chip_names[i].name;
        return NULL;
}

/* ---------------------------------------------------------------------- */
/* decoding helpers                                                        */

static void copy_cstr(char *dst, size_t dst_size, const uint8_t *src, size_t src_len) {
        size_t n = strnlen((const char *) src, MIN(src_len, dst_size - 1));
        memcpy(dst, src, n);
        dst[n] = 0;
}

static void header_decode(const uint8_t *h, AppImageHeader *ret) {
        *ret = (AppImageHeader) {
                .segment_count = h[1],
                .spi_mode = h[2],
                .spi_speed_size = h[3],
                .entry_addr = le32_read(h + 4),
                .wp_pin = h[8],
                .chip_id = le16_read(h + 12),
                .min_chip_rev = h[14],
                .min_chip_rev_full = le16_read(h + 15),
                .max_chip_rev_full = le16_read(h + 17),
                .hash_appended = h[23] == 1,
        };
}

/* §5.3, at d = image offset 0x20. */
static int desc_decode(const uint8_t *d, AppDesc *ret, char *err, size_t errlen) {
        uint32_t magic = le32_read(d);

        if (magic != APP_DESC_MAGIC)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "no app descriptor at offset 0x20 (magic 0x%08x, expected 0x%08x)",
                                   magic, APP_DESC_MAGIC);
        *ret = (AppDesc) {
                .secure_version = le32_read(d + 4),
                .min_efuse_blk_rev_full = le16_read(d + 176),
                .max_efuse_blk_rev_full = le16_read(d + 178),
                .mmu_page_size = d[180],
                .spi_flash_mode = d[181],
        };
        copy_cstr(ret->version, sizeof ret->version, d + 16, 32);
        copy_cstr(ret->project_name, sizeof ret->project_name, d + 48, 32);
        copy_cstr(ret->time, sizeof ret->time, d + 80, 16);
        copy_cstr(ret->date, sizeof ret->date, d + 96, 16);
        copy_cstr(ret->idf_ver, sizeof ret->idf_ver, d + 112, 32);
        memcpy(ret->app_elf_sha256, d + 144, 32);
        return 0;
}

/* m points at APP_MARKER_LEN bytes. 1 = marker found, 0 = none, <0 = a
 * marker with a value we do not know. */
static int marker_decode(const uint8_t *m, AppBehaviour *ret, char *err, size_t errlen) {
        uint32_t v;

        if (memcmp(m, marker_magic, sizeof marker_magic) != 0 || le32_read(m + 12) != esp_crc(m, 12)) {
                *ret = APP_BEHAVIOUR_OK;
                return 0;
        }
        v = le32_read(m + 8);
        if (v >= _APP_BEHAVIOUR_MAX)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "behaviour marker at offset 0x%x holds unknown value %u", APP_MARKER_OFFSET, v);
        *ret = (AppBehaviour) v;
        return 1;
}

static void marker_encode(uint8_t *m, AppBehaviour b) {
        memcpy(m, marker_magic, sizeof marker_magic);
        le32_write(m + 8, (uint32_t) b);
        le32_write(m + 12, esp_crc(m, 12));
}

AppBehaviour app_image_behaviour(const uint8_t *data, size_t len) {
        AppBehaviour b;

        if (!data || len < APP_MARKER_OFFSET + APP_MARKER_LEN || data[0] != APP_IMAGE_MAGIC)
                return APP_BEHAVIOUR_OK;
        /* The marker must sit inside the first segment, which starts at 0x20. */
        if (le32_read(data + APP_IMAGE_HEADER_LEN + 4) < APP_DESC_LEN + APP_MARKER_LEN)
                return APP_BEHAVIOUR_OK;
        if (marker_decode(data + APP_MARKER_OFFSET, &b, NULL, 0) <= 0)
                return APP_BEHAVIOUR_OK;
        return b;
}

/* ---------------------------------------------------------------------- */
/* streaming verifier                                                      */

typedef enum VerifierState {
        VS_HEADER,       /* the 24-byte image header */
        VS_SEG_HEADER,   /* 8-byte segment header */
        VS_SEG_DATA,     /* segment data (checksummed) */
        VS_PAD,          /* zero padding before the checksum */
        VS_CHECKSUM,     /* the checksum byte */
        VS_HASH,         /* the appended SHA-256 */
        VS_TAIL,         /* image_len .. signed_len (0xFF padding before the sector) */
        VS_SECTOR,       /* the 4 KiB signature sector */
        VS_TRAILING,     /* anything after it: ignored */
        _VS_MAX,
        _VS_INVALID = -EINVAL,
} VerifierState;

struct AppImageVerifier {
        size_t max_len;
        size_t pos;                     /* bytes fed so far */
        VerifierState state;
        size_t state_left;              /* bytes left in the current state */

        int error;                      /* sticky */
        char errmsg[256];

        uint8_t prefix[APP_IMAGE_PEEK_LEN];
        size_t prefix_len;

        uint8_t buf[APP_IMAGE_HEADER_LEN];      /* header / segment header being collected */
        size_t buf_len;

        AppImageHeader header;
        bool have_header;
        AppDesc desc;
        AppBehaviour behaviour;
        bool has_marker;
        bool have_desc;

        AppImageSegment segments[APP_IMAGE_MAX_SEGMENTS];
        unsigned n_segments;

        uint8_t checksum;               /* running XOR */
        uint8_t stored_checksum;
        size_t image_len, signed_len;

        EVP_MD_CTX *hash_ctx;           /* [0, checksum] */
        EVP_MD_CTX *signed_ctx;         /* [0, signed_len) */
        uint8_t stored_hash[APP_IMAGE_HASH_LEN];
        uint8_t image_hash[APP_IMAGE_HASH_LEN];
        bool hash_done;
        uint8_t signed_digest[32];
        bool have_signed_digest;

        uint8_t *sector;
        size_t sector_len;
};

int app_image_verifier_new(size_t max_len, AppImageVerifier **ret) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;

        v = calloc(1, sizeof *v);
        if (!v)
                return -ENOMEM;
        v->max_len = max_len == 0 || max_len > APP_IMAGE_MAX_LEN ? APP_IMAGE_MAX_LEN : max_len;
        v->state = VS_HEADER;
        v->state_left = APP_IMAGE_HEADER_LEN;
        v->hash_ctx = EVP_MD_CTX_new();
        v->signed_ctx = EVP_MD_CTX_new();
        if (!v->hash_ctx || !v->signed_ctx)
                return -ENOMEM;
        if (EVP_DigestInit_ex(v->hash_ctx, EVP_sha256(), NULL) != 1 ||
            EVP_DigestInit_ex(v->signed_ctx, EVP_sha256(), NULL) != 1)
                return -EIO;
        *ret = TAKE_PTR(v);
        return 0;
}

AppImageVerifier *app_image_verifier_free(AppImageVerifier *v) {
        if (!v)
                return NULL;
        EVP_MD_CTX_free(v->hash_ctx);
        EVP_MD_CTX_free(v->signed_ctx);
        free(v->sector);
        free(v);
        return NULL;
}

/* The ESP image checksum: XOR of all segment data bytes, folded a word at
 * a time (the byte loop was a visible part of a fleet OTA's profile). */
static uint8_t xor_bytes(uint8_t acc, const uint8_t *p, size_t n) {
        uint64_t w = 0;
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                uint64_t x;
                memcpy(&x, p + i, sizeof x);
                w ^= x;
        }
        w ^= w >> 32;
        w ^= w >> 16;
        w ^= w >> 8;
        acc ^= (uint8_t) w;
        for (; i < n; i++)
                acc ^= p[i];
        return acc;
}

static int verifier_fail(AppImageVerifier *v, const char *fmt, ...) _printf_(2, 3);
static int verifier_fail(AppImageVerifier *v, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(v->errmsg, sizeof v->errmsg, fmt, ap);
        va_end(ap);
        v->error = -ESP_ERR_IMAGE_INVALID;
        log_debug("image invalid: %s", v->errmsg);
        return v->error;
}

static void verifier_enter(AppImageVerifier *v, VerifierState s, size_t len) {
        v->state = s;
        v->state_left = len;
        v->buf_len = 0;
}

static int verifier_finalize_signed(AppImageVerifier *v) {
        if (EVP_DigestFinal_ex(v->signed_ctx, v->signed_digest, NULL) != 1)
                return verifier_fail(v, "SHA-256 failed");
        v->have_signed_digest = true;
        return 0;
}

/* Called once the last segment ended: the layout of the rest is now known (§5.2). */
static int verifier_segments_done(AppImageVerifier *v) {
        size_t checksum_off = v->pos + (15 - v->pos % 16);

        v->image_len = checksum_off + 1 + (v->header.hash_appended ? APP_IMAGE_HASH_LEN : 0);
        v->signed_len = ALIGN_TO(v->image_len, APP_IMAGE_SECTOR_SIZE);
        if (v->image_len > v->max_len)
                return verifier_fail(v, "image length %zu exceeds the limit of %zu bytes", v->image_len, v->max_len);
        verifier_enter(v, VS_PAD, checksum_off - v->pos);
        return 0;
}

static int verifier_next_segment(AppImageVerifier *v) {
        if (v->n_segments < v->header.segment_count) {
                verifier_enter(v, VS_SEG_HEADER, APP_IMAGE_SEGMENT_HEADER_LEN);
                return 0;
        }
        return verifier_segments_done(v);
}

static int verifier_check_desc(AppImageVerifier *v) {
        char msg[200];
        int r;

        if (v->have_desc || v->prefix_len < APP_MARKER_OFFSET + APP_MARKER_LEN || v->n_segments < 1)
                return 0;
        if (v->segments[0].offset != APP_DESC_OFFSET || v->segments[0].length < APP_DESC_LEN)
                return verifier_fail(v, "first segment (%u bytes) is too short to hold the app descriptor",
                                     v->segments[0].length);
        r = desc_decode(v->prefix + APP_DESC_OFFSET, &v->desc, msg, sizeof msg);
        if (r < 0)
                return verifier_fail(v, "%s", msg);
        if (v->segments[0].length >= APP_DESC_LEN + APP_MARKER_LEN) {
                r = marker_decode(v->prefix + APP_MARKER_OFFSET, &v->behaviour, msg, sizeof msg);
                if (r < 0)
                        return verifier_fail(v, "%s", msg);
                v->has_marker = r > 0;
        }
        v->have_desc = true;
        return 0;
}

static int verifier_header_done(AppImageVerifier *v) {
        const uint8_t *h = v->buf;

        if (h[0] != APP_IMAGE_MAGIC)
                return verifier_fail(v, "bad image magic 0x%02x at offset 0 (expected 0x%02x): not an ESP app image",
                                     h[0], APP_IMAGE_MAGIC);
        header_decode(h, &v->header);
        if (v->header.segment_count == 0 || v->header.segment_count > APP_IMAGE_MAX_SEGMENTS)
                return verifier_fail(v, "bad segment count %u (1..%u)", v->header.segment_count, APP_IMAGE_MAX_SEGMENTS);
        if (h[23] > 1)
                return verifier_fail(v, "bad hash_appended flag 0x%02x", h[23]);
        v->have_header = true;
        return verifier_next_segment(v);
}

static int verifier_seg_header_done(AppImageVerifier *v) {
        AppImageSegment *s = &v->segments[v->n_segments];

        *s = (AppImageSegment) {
                .load_addr = le32_read(v->buf),
                .length = le32_read(v->buf + 4),
                .offset = (uint32_t) v->pos,
        };
        /* esp_image_format.c refuses unaligned segment lengths. */
        if (s->length % 4 != 0)
                return verifier_fail(v, "segment %u at offset 0x%x: length 0x%x is not a multiple of 4",
                                     v->n_segments, s->offset - APP_IMAGE_SEGMENT_HEADER_LEN, s->length);
        if ((uint64_t) v->pos + s->length + 1 + APP_IMAGE_HASH_LEN > v->max_len)
                return verifier_fail(v, "segment %u at offset 0x%x: length 0x%x runs past the %zu-byte limit",
                                     v->n_segments, s->offset - APP_IMAGE_SEGMENT_HEADER_LEN, s->length, v->max_len);
        v->n_segments++;
        if (s->length == 0)
                return verifier_next_segment(v);
        verifier_enter(v, VS_SEG_DATA, s->length);
        return 0;
}

static int verifier_hash_done(AppImageVerifier *v) {
        if (EVP_DigestFinal_ex(v->hash_ctx, v->image_hash, NULL) != 1)
                return verifier_fail(v, "SHA-256 failed");
        v->hash_done = true;
        if (v->header.hash_appended && memcmp(v->image_hash, v->stored_hash, APP_IMAGE_HASH_LEN) != 0)
                return verifier_fail(v, "appended SHA-256 at offset 0x%zx does not match the image contents",
                                     v->image_len - APP_IMAGE_HASH_LEN);
        if (v->signed_len == v->image_len) {
                int r = verifier_finalize_signed(v);
                if (r < 0)
                        return r;
                verifier_enter(v, VS_SECTOR, APP_IMAGE_SECTOR_SIZE);
        } else
                verifier_enter(v, VS_TAIL, v->signed_len - v->image_len);
        return 0;
}

/* Consumes up to n bytes of the current state; returns how many, or < 0. */
static ssize_t verifier_step(AppImageVerifier *v, const uint8_t *p, size_t n) {
        VerifierState s = v->state;
        size_t k = s == VS_TRAILING ? n : MIN(n, v->state_left);
        int r = 0;

        /* The simple hash covers everything through the checksum byte; the
         * SBv2 digest everything before the signature sector. Both start
         * alike, so the bytes are hashed once: at the checksum byte the SBv2
         * state becomes a copy of the simple hash's, and goes on alone (a
         * fleet OTA spent a third of its CPU in SHA-256, issue #10). */
        if (s <= VS_CHECKSUM && EVP_DigestUpdate(v->hash_ctx, p, k) != 1)
                return verifier_fail(v, "SHA-256 failed");
        if (s == VS_CHECKSUM && k > 0 && EVP_MD_CTX_copy_ex(v->signed_ctx, v->hash_ctx) != 1)
                return verifier_fail(v, "SHA-256 failed");
        if (s > VS_CHECKSUM && s <= VS_TAIL && EVP_DigestUpdate(v->signed_ctx, p, k) != 1)
                return verifier_fail(v, "SHA-256 failed");
        if (v->prefix_len < sizeof v->prefix && v->prefix_len == v->pos) {
                size_t c = MIN(k, sizeof v->prefix - v->prefix_len);
                memcpy(v->prefix + v->prefix_len, p, c);
                v->prefix_len += c;
        }

        switch (s) {
        case VS_HEADER:
        case VS_SEG_HEADER:
                memcpy(v->buf + v->buf_len, p, k);
                v->buf_len += k;
                break;
        case VS_SEG_DATA:
                v->checksum = xor_bytes(v->checksum, p, k);
                break;
        case VS_PAD:
        case VS_TAIL:
        case VS_TRAILING:
                break;
        case VS_CHECKSUM:
                v->stored_checksum = p[0];
                break;
        case VS_HASH:
                memcpy(v->stored_hash + (APP_IMAGE_HASH_LEN - v->state_left), p, k);
                break;
        case VS_SECTOR:
                memcpy(v->sector + v->sector_len, p, k);
                v->sector_len += k;
                break;
        case _VS_MAX:
        case _VS_INVALID:
                return verifier_fail(v, "internal error: bad verifier state %d", (int) s);
        }

        v->pos += k;
        if (s == VS_TRAILING)
                return (ssize_t) k;
        v->state_left -= k;
        if (v->state_left > 0)
                return (ssize_t) k;

        switch (s) {
        case VS_HEADER:
                r = verifier_header_done(v);
                break;
        case VS_SEG_HEADER:
                r = verifier_seg_header_done(v);
                break;
        case VS_SEG_DATA:
                r = verifier_next_segment(v);
                break;
        case VS_PAD:
                verifier_enter(v, VS_CHECKSUM, 1);
                break;
        case VS_CHECKSUM: {
                uint8_t expected = v->checksum ^ APP_IMAGE_CHECKSUM_SEED;
                if (v->stored_checksum != expected)
                        return verifier_fail(v, "checksum mismatch at offset 0x%zx: stored 0x%02x, computed 0x%02x",
                                             v->pos - 1, v->stored_checksum, expected);
                if (v->header.hash_appended)
                        verifier_enter(v, VS_HASH, APP_IMAGE_HASH_LEN);
                else
                        r = verifier_hash_done(v);
                break;
        }
        case VS_HASH:
                r = verifier_hash_done(v);
                break;
        case VS_TAIL:
                r = verifier_finalize_signed(v);
                if (r >= 0)
                        verifier_enter(v, VS_SECTOR, APP_IMAGE_SECTOR_SIZE);
                break;
        case VS_SECTOR:
                verifier_enter(v, VS_TRAILING, 0);
                break;
        case VS_TRAILING:
        case _VS_MAX:
        case _VS_INVALID:
                return verifier_fail(v, "internal error: bad verifier state %d", (int) s);
        }
        if (r < 0)
                return r;
        return (ssize_t) k;
}

int app_image_verifier_feed(AppImageVerifier *v, const void *data, size_t len, char *err, size_t errlen) {
        const uint8_t *p = data;

        if (!v)
                return -EINVAL;
        while (len > 0 && v->error == 0) {
                ssize_t k;

                if (v->state == VS_SECTOR && !v->sector) {
                        v->sector = malloc(APP_IMAGE_SECTOR_SIZE);
                        if (!v->sector)
                                return -ENOMEM;
                }
                k = verifier_step(v, p, len);
                if (k < 0)
                        break;
                p += k;
                len -= (size_t) k;
                if (verifier_check_desc(v) < 0)
                        break;
        }
        if (v->error < 0)
                return errf(err, errlen, v->error, "%s", v->errmsg);
        return 0;
}

bool app_image_verifier_have_desc(const AppImageVerifier *v) {
        return v && v->have_desc;
}

const AppImageHeader *app_image_verifier_header(const AppImageVerifier *v) {
        return v && v->have_desc ? &v->header : NULL;
}

const AppDesc *app_image_verifier_desc(const AppImageVerifier *v) {
        return v && v->have_desc ? &v->desc : NULL;
}

AppBehaviour app_image_verifier_behaviour(const AppImageVerifier *v) {
        return v && v->have_desc ? v->behaviour : APP_BEHAVIOUR_OK;
}

size_t app_image_verifier_image_len(const AppImageVerifier *v) {
        return v ? v->image_len : 0;
}

size_t app_image_verifier_bytes_fed(const AppImageVerifier *v) {
        return v ? v->pos : 0;
}

const uint8_t *app_image_verifier_signature_sector(const AppImageVerifier *v) {
        return v && v->sector && v->sector_len == APP_IMAGE_SECTOR_SIZE ? v->sector : NULL;
}

static void verifier_fill_info(const AppImageVerifier *v, AppImageInfo *ret) {
        *ret = (AppImageInfo) {
                .header = v->header,
                .desc = v->desc,
                .has_desc = v->have_desc,
                .behaviour = v->behaviour,
                .has_marker = v->has_marker,
                .n_segments = v->n_segments,
                .checksum = v->stored_checksum,
                .image_len = v->image_len,
                .signed_len = v->signed_len,
                .has_signed_digest = v->have_signed_digest,
                .has_signature_sector = v->sector_len == APP_IMAGE_SECTOR_SIZE,
                .total_len = v->pos,
        };
        memcpy(ret->segments, v->segments, sizeof v->segments);
        if (v->hash_done)
                memcpy(ret->image_hash, v->image_hash, sizeof ret->image_hash);
        if (v->have_signed_digest)
                memcpy(ret->signed_digest, v->signed_digest, sizeof ret->signed_digest);
}

int app_image_verifier_finish(AppImageVerifier *v, AppImageInfo *ret, char *err, size_t errlen) {
        if (!v)
                return -EINVAL;
        if (ret)
                verifier_fill_info(v, ret);
        if (v->error < 0)
                return errf(err, errlen, v->error, "%s", v->errmsg);

        if (!v->hash_done) {
                const char *where = "";

                switch (v->state) {
                case VS_HEADER:
                        where = "in the image header";
                        break;
                case VS_SEG_HEADER:
                        where = "in a segment header";
                        break;
                case VS_SEG_DATA:
                        where = "in segment data";
                        break;
                case VS_PAD:
                case VS_CHECKSUM:
                        where = "before the checksum";
                        break;
                case VS_HASH:
                        where = "in the appended SHA-256";
                        break;
                case VS_TAIL:
                case VS_SECTOR:
                case VS_TRAILING:
                case _VS_MAX:
                case _VS_INVALID:
                        where = "";
                        break;
                }
                if (v->image_len > 0)
                        return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                           "truncated image: %zu bytes, the image is %zu bytes long (ends %s)",
                                           v->pos, v->image_len, where);
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "truncated image: only %zu bytes (ends %s)", v->pos, where);
        }
        if (!v->have_desc)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID, "image too short to hold an app descriptor");
        return 0;
}

int app_image_parse(const uint8_t *data, size_t len, AppImageInfo *ret, char *err, size_t errlen) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;
        int r;

        if (!data && len > 0)
                return -EINVAL;
        r = app_image_verifier_new(0, &v);
        if (r < 0)
                return r;
        (void) app_image_verifier_feed(v, data, len, NULL, 0);
        return app_image_verifier_finish(v, ret, err, errlen);
}

/* ---------------------------------------------------------------------- */
/* builder                                                                 */

typedef struct ChipLayout {
        uint16_t chip_id;
        uint32_t dram, iram, entry_off;
        uint16_t max_chip_rev_full;
} ChipLayout;

/* Plausible load addresses inside each SoC's memory map (TRM): DROM and IROM
 * are the flash-mapped windows, DRAM/IRAM the internal SRAM. */
static const ChipLayout chip_layouts[] = {
        { ESP_CHIP_ID_ESP32C3, 0x3FC8A000, 0x40380000, 0x40, 199 },
        { ESP_CHIP_ID_ESP32S3, 0x3FC93000, 0x40374000, 0x40, 99 },
};

#define DROM_LOAD 0x3C000020u
#define IROM_BASE 0x42000000u
#define DRAM_LEN 64u
#define IRAM_LEN 256u
#define RODATA_LEN 240u

static int check_label(const char *what, const char *s, size_t max, char *err, size_t errlen) {
        size_t n = strlen(s);

        if (n == 0 || n > max)
                return errf(err, errlen, -EINVAL, "%s '%s' must be 1..%zu characters", what, s, max);
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x21 || (unsigned char) s[i] > 0x7e)
                        return errf(err, errlen, -EINVAL,
                                           "%s '%s' may hold only printable ASCII without spaces", what, s);
        return 0;
}

/* A deterministic byte stream (xorshift64*) so filler data is not all zeros. */
static void fill_pseudo_random(uint8_t *p, size_t n, uint64_t seed) {
        uint64_t x = seed ? seed : 0x9E3779B97F4A7C15ull;

        for (size_t i = 0; i < n; i += 8) {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                uint64_t w = x * 0x2545F4914F6CDD1Dull;
                uint8_t b[8];
                le64_write(b, w);
                memcpy(p + i, b, MIN((size_t) 8, n - i));
        }
}

static int sha256(const void *data, size_t len, uint8_t out[32]) {
        return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static uint8_t *put_segment(uint8_t *p, uint32_t load, const void *data, uint32_t len, uint8_t *checksum) {
        le32_write(p, load);
        le32_write(p + 4, len);
        p += APP_IMAGE_SEGMENT_HEADER_LEN;
        if (data)
                memcpy(p, data, len);
        else
                memset(p, 0, len);
        *checksum = xor_bytes(*checksum, p, len);
        return p + len;
}

int app_image_build(const AppImageParams *p, uint8_t **ret_data, size_t *ret_len, char *err, size_t errlen) {
        const ChipLayout *chip = NULL;
        const char *project;
        uint8_t desc[APP_DESC_LEN] = {}, drom[APP_DESC_LEN + APP_MARKER_LEN + RODATA_LEN] = {};
        uint8_t dram[DRAM_LEN], iram[IRAM_LEN], elf_sha[32], seed_bytes[32];
        _cleanup_free_ uint8_t *image = NULL;
        _cleanup_free_ char *seed_text = NULL;
        uint64_t filler_len = 0, pad_len = 0, image_len, off, target;
        uint8_t checksum = APP_IMAGE_CHECKSUM_SEED, *w;
        bool filler, pad;
        unsigned n_segments = 3;
        int r;

        if (!p || !ret_data || !ret_len)
                return -EINVAL;
        pad = p->secure_pad;
        for (size_t i = 0; i < ELEMENTSOF(chip_layouts); i++)
                if (chip_layouts[i].chip_id == p->chip_id)
                        chip = &chip_layouts[i];
        if (!chip)
                return errf(err, errlen, -EINVAL, "chip id %u is not supported (esp32c3 = 5, esp32s3 = 9)",
                                   p->chip_id);
        if (!p->version)
                return errf(err, errlen, -EINVAL, "a version is required");
        r = check_label("version", p->version, APP_DESC_VERSION_MAX, err, errlen);
        if (r < 0)
                return r;
        project = p->project_name ?: "espfleet-app";
        r = check_label("project name", project, APP_DESC_PROJECT_MAX, err, errlen);
        if (r < 0)
                return r;
        if (p->behaviour < 0 || p->behaviour >= _APP_BEHAVIOUR_MAX)
                return errf(err, errlen, -EINVAL, "bad behaviour %d", (int) p->behaviour);
        if (p->size > APP_IMAGE_MAX_LEN)
                return errf(err, errlen, -ERANGE, "image size %" PRIu64 " exceeds the maximum of %u bytes",
                                   p->size, APP_IMAGE_MAX_LEN);

        /* app_elf_sha256 stands for the ELF the image came from: hash what
         * makes this image what it is. */
        if (asprintf(&seed_text, "espfleet-app\n%u\n%s\n%s\n%u\n%s\n", p->chip_id, project, p->version,
                     p->secure_version, app_behaviour_to_string(p->behaviour)) < 0)
                return -ENOMEM;
        r = sha256(seed_text, strlen(seed_text), elf_sha);
        if (r < 0)
                return r;
        r = sha256(elf_sha, sizeof elf_sha, seed_bytes);
        if (r < 0)
                return r;

        /* esp_app_desc_t, §5.3 */
        le32_write(desc, APP_DESC_MAGIC);
        le32_write(desc + 4, p->secure_version);
        memcpy(desc + 16, p->version, strlen(p->version));
        memcpy(desc + 48, project, strlen(project));
        memcpy(desc + 80, "12:00:00", 8);
        memcpy(desc + 96, "Jan  1 2026", 11);
        memcpy(desc + 112, APP_IDF_VERSION, strlen(APP_IDF_VERSION));
        memcpy(desc + 144, elf_sha, 32);
        le16_write(desc + 176, 0);
        le16_write(desc + 178, 99);
        desc[180] = 16;         /* log2(64 KiB) MMU page */
        desc[181] = 2;          /* DIO */

        memcpy(drom, desc, sizeof desc);
        marker_encode(drom + APP_DESC_LEN, p->behaviour);
        snprintf((char *) drom + APP_DESC_LEN + APP_MARKER_LEN, RODATA_LEN,
                 "espfleet emulated firmware: project %s, version %s, chip %s, behaviour %s",
                 project, p->version, esp_chip_id_to_string(p->chip_id), app_behaviour_to_string(p->behaviour));
        fill_pseudo_random(dram, sizeof dram, le64_read(seed_bytes));
        fill_pseudo_random(iram, sizeof iram, le64_read(seed_bytes + 8));

        /* Layout: header, DROM, DRAM, IRAM, [IROM filler], [SBv2 pad]. All
         * segment lengths are multiples of 4, so `off` stays 4-aligned. */
        off = APP_IMAGE_HEADER_LEN + 3 * APP_IMAGE_SEGMENT_HEADER_LEN + sizeof drom + sizeof dram + sizeof iram;

        /* Filler: choose its length so the image ends exactly at the target.
         * With the data ending at E (E % 16 == 12), the checksum lands on
         * E + 3 and the image ends at E + 3 + 1 + 32 (§5.2). */
        target = p->size == 0 ? 0 : pad ? ALIGN_TO(p->size, (uint64_t) APP_IMAGE_MMU_PAGE_SIZE) : ALIGN_TO(p->size, 16);
        filler = target > 0 && target >= off + APP_IMAGE_SEGMENT_HEADER_LEN + (pad ? APP_IMAGE_SEGMENT_HEADER_LEN : 0) + 36;
        if (filler) {
                filler_len = target - 36 - off - APP_IMAGE_SEGMENT_HEADER_LEN - (pad ? APP_IMAGE_SEGMENT_HEADER_LEN : 0);
                off += APP_IMAGE_SEGMENT_HEADER_LEN + filler_len;
                n_segments++;
        }
        /* --secure-pad-v2: a zero segment (load address 0) so that the image
         * with its hash ends on a 64 KiB boundary (§5.2). */
        if (pad) {
                uint64_t end = ALIGN_TO(off + APP_IMAGE_SEGMENT_HEADER_LEN + 36, (uint64_t) APP_IMAGE_MMU_PAGE_SIZE);
                pad_len = end - 36 - off - APP_IMAGE_SEGMENT_HEADER_LEN;
                off += APP_IMAGE_SEGMENT_HEADER_LEN + pad_len;
                n_segments++;
        }
        image_len = (off + (15 - off % 16)) + 1 + APP_IMAGE_HASH_LEN;
        if (image_len > APP_IMAGE_MAX_LEN)
                return errf(err, errlen, -ERANGE, "image would be %" PRIu64 " bytes, more than %u",
                                   image_len, APP_IMAGE_MAX_LEN);

        image = calloc(1, image_len);
        if (!image)
                return -ENOMEM;

        /* esp_image_header_t, §5.1 */
        image[0] = APP_IMAGE_MAGIC;
        image[1] = (uint8_t) n_segments;
        image[2] = 2;           /* DIO */
        image[3] = 0x2F;        /* 4 MB flash, 80 MHz */
        le32_write(image + 4, chip->iram + chip->entry_off);
        image[8] = 0xEE;        /* WP pin disabled */
        le16_write(image + 12, chip->chip_id);
        image[14] = 0;
        le16_write(image + 15, 0);
        le16_write(image + 17, chip->max_chip_rev_full);
        image[23] = 1;          /* hash appended */

        w = image + APP_IMAGE_HEADER_LEN;
        w = put_segment(w, DROM_LOAD, drom, sizeof drom, &checksum);
        w = put_segment(w, chip->dram, dram, sizeof dram, &checksum);
        w = put_segment(w, chip->iram, iram, sizeof iram, &checksum);
        if (filler) {
                /* Flash-mapped segments keep vaddr ≡ file offset (mod 64 KiB). */
                uint32_t data_off = (uint32_t) (w - image) + APP_IMAGE_SEGMENT_HEADER_LEN;
                uint8_t *d = w + APP_IMAGE_SEGMENT_HEADER_LEN;

                fill_pseudo_random(d, filler_len, le64_read(seed_bytes + 16));
                w = put_segment(w, IROM_BASE + 0x10000 + (data_off & 0xFFFF), d, (uint32_t) filler_len, &checksum);
        }
        if (pad)
                w = put_segment(w, 0, NULL, (uint32_t) pad_len, &checksum);

        assert((uint64_t) (w - image) == off);
        image[image_len - APP_IMAGE_HASH_LEN - 1] = checksum;
        r = sha256(image, image_len - APP_IMAGE_HASH_LEN, image + image_len - APP_IMAGE_HASH_LEN);
        if (r < 0)
                return r;

        log_debug("built %s image '%s' %s: %" PRIu64 " bytes, %u segments", esp_chip_id_to_string(p->chip_id),
                  project, p->version, image_len, n_segments);
        *ret_len = (size_t) image_len;
        *ret_data = TAKE_PTR(image);
        return 0;
}
