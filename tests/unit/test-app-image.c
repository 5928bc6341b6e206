/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <openssl/evp.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "image/app-image.h"
#include "image/sbv2.h"

#define SB VECTORS_DIR "/sbv2/"

static uint8_t *load(const char *name, size_t *len) {
        uint8_t *d = NULL;
        int r = read_full_file(name, 1u << 24, &d, len);
        cr_assert_eq(r, 0, "reading %s: %d", name, r);
        return d;
}

static uint8_t *build(uint16_t chip, const char *version, uint64_t size, bool pad, AppBehaviour b, size_t *len) {
        AppImageParams p = {
                .chip_id = chip,
                .version = version,
                .secure_version = 3,
                .project_name = "fleet-fw",
                .size = size,
                .behaviour = b,
                .secure_pad = pad,
        };
        uint8_t *d = NULL;
        char err[256] = "";
        int r = app_image_build(&p, &d, len, err, sizeof err);
        cr_assert_eq(r, 0, "build: %s", err);
        return d;
}

static void sha256(const uint8_t *d, size_t len, uint8_t out[32]) {
        cr_assert_eq(EVP_Digest(d, len, out, NULL, EVP_sha256(), NULL), 1);
}

Test(app_image, hello_world_vector_parses) {
        _cleanup_free_ uint8_t *d = NULL;
        uint8_t h[32];
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        d = load(SB "hello-world-signed.bin", &len);
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), 0, "%s", err);
        cr_assert_eq(info.header.chip_id, ESP_CHIP_ID_ESP32);
        cr_assert_eq(info.header.segment_count, 7);
        cr_assert(info.header.hash_appended);
        cr_assert_str_eq(info.desc.version, "v3.3-beta3-21-g0706bd0d1-dirty");
        cr_assert_str_eq(info.desc.project_name, "hello-world");
        cr_assert_str_eq(info.desc.date, "Jun 19 2019");
        cr_assert_str_eq(info.desc.time, "14:43:38");
        cr_assert_eq(info.desc.secure_version, 0);
        cr_assert_not(info.has_marker);
        cr_assert_eq(info.behaviour, APP_BEHAVIOUR_OK);
        cr_assert_eq(info.segments[0].offset, 0x20);
        cr_assert_eq(info.segments[0].load_addr, 0x3f400020);
        /* the appended hash (validated by parse) really is the SHA-256 of what precedes it */
        sha256(d, info.image_len - 32, h);
        cr_assert_arr_eq(h, d + info.image_len - 32, 32);
        cr_assert_arr_eq(info.image_hash, h, 32);
        cr_assert_eq(info.image_len % 16, 0);
        cr_assert_leq(info.image_len, len);
}

Test(app_image, hello_world_tampered_fails) {
        _cleanup_free_ uint8_t *d = NULL;
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        d = load(SB "hello-world-signed.bin", &len);
        d[0x31] ^= 0x01;                /* the version string: checksum breaks */
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "checksum"), "%s", err);
        /* the header is still decoded for the caller */
        cr_assert_eq(info.header.segment_count, 7);
}

static void check_round_trip(uint16_t chip) {
        _cleanup_free_ uint8_t *d = NULL;
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        d = build(chip, "1.2.3", 0, true, APP_BEHAVIOUR_NO_CONNECT, &len);
        cr_assert_eq(len % 65536, 0, "secure pad: %zu", len);
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), 0, "%s", err);
        cr_assert_eq(info.header.chip_id, chip);
        cr_assert_eq(d[0], 0xE9);
        cr_assert_eq(le32_read(d + 0x20), APP_DESC_MAGIC);
        cr_assert_str_eq(info.desc.version, "1.2.3");
        cr_assert_str_eq(info.desc.project_name, "fleet-fw");
        cr_assert_eq(info.desc.secure_version, 3);
        cr_assert_eq(info.desc.mmu_page_size, 16);
        cr_assert(info.has_marker);
        cr_assert_eq(info.behaviour, APP_BEHAVIOUR_NO_CONNECT);
        cr_assert_eq(info.image_len, len);
        cr_assert_eq(info.signed_len, len);
        cr_assert(info.has_signed_digest);
        cr_assert_not(info.has_signature_sector);
        /* last segment: SBv2 padding, load address 0, zeros */
        cr_assert_eq(info.segments[info.n_segments - 1].load_addr, 0);
        /* checksum byte ends a 16-byte block */
        cr_assert_eq((len - 32) % 16, 0);
        cr_assert_eq(app_image_behaviour(d, 1024), APP_BEHAVIOUR_NO_CONNECT);
}

Test(app_image, round_trip_c3) {
        check_round_trip(ESP_CHIP_ID_ESP32C3);
}

Test(app_image, round_trip_s3) {
        check_round_trip(ESP_CHIP_ID_ESP32S3);
}

Test(app_image, deterministic_and_distinct) {
        _cleanup_free_ uint8_t *a = NULL, *b = NULL, *c = NULL;
        size_t la, lb, lc;

        a = build(ESP_CHIP_ID_ESP32C3, "2.0.0", 0, false, APP_BEHAVIOUR_OK, &la);
        b = build(ESP_CHIP_ID_ESP32C3, "2.0.0", 0, false, APP_BEHAVIOUR_OK, &lb);
        c = build(ESP_CHIP_ID_ESP32C3, "2.0.1", 0, false, APP_BEHAVIOUR_OK, &lc);
        cr_assert_eq(la, lb);
        cr_assert_arr_eq(a, b, la);
        cr_assert_eq(la, lc);
        cr_assert_arr_neq(a, c, la);
        cr_assert_arr_neq(a + 0x20 + 144, c + 0x20 + 144, 32);      /* app_elf_sha256 */
}

Test(app_image, sizes) {
        static const struct {
                uint64_t size;
                bool pad;
                size_t expect;
        } cases[] = {
                { 100000, false, 100000 },
                { 100001, false, 100016 },
                { 200000, true, 262144 },
                { 65536, true, 65536 },
                { 1, false, 0 },        /* below the minimum: as small as possible */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ uint8_t *d = NULL;
                AppImageInfo info;
                char err[256] = "";
                size_t len;

                d = build(ESP_CHIP_ID_ESP32S3, "3.0", cases[i].size, cases[i].pad, APP_BEHAVIOUR_OK, &len);
                if (cases[i].expect)
                        cr_assert_eq(len, cases[i].expect, "case %zu: %zu", i, len);
                else
                        cr_assert_lt(len, 2048);
                cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), 0, "case %zu: %s", i, err);
                cr_assert_eq(info.image_len, len);
        }
}

Test(app_image, build_rejects_bad_parameters) {
        AppImageParams p = { .chip_id = ESP_CHIP_ID_ESP32C3, .version = "1.0" };
        uint8_t *d = NULL;
        char err[256] = "";
        size_t len;

        p.version = "0123456789012345678901234567890123";
        cr_assert_eq(app_image_build(&p, &d, &len, err, sizeof err), -EINVAL);
        cr_assert(strstr(err, "version"), "%s", err);
        p.version = "1.0 beta";
        cr_assert_eq(app_image_build(&p, &d, &len, err, sizeof err), -EINVAL);
        p.version = NULL;
        cr_assert_eq(app_image_build(&p, &d, &len, err, sizeof err), -EINVAL);
        p.version = "1.0";
        p.chip_id = 0;
        cr_assert_eq(app_image_build(&p, &d, &len, err, sizeof err), -EINVAL);
        cr_assert(strstr(err, "chip"), "%s", err);
        p.chip_id = ESP_CHIP_ID_ESP32C3;
        p.size = 64ull << 20;
        cr_assert_eq(app_image_build(&p, &d, &len, err, sizeof err), -ERANGE);
        cr_assert_null(d);
}

Test(app_image, tampered_byte_fails_hash) {
        _cleanup_free_ uint8_t *d = NULL;
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        d = build(ESP_CHIP_ID_ESP32C3, "1.0.0", 0, true, APP_BEHAVIOUR_OK, &len);
        /* a header byte is not checksummed, but it is hashed */
        d[9] ^= 0x01;
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "SHA-256"), "%s", err);
        d[9] ^= 0x01;
        /* two flips in segment data cancel in the XOR checksum: only the hash sees them */
        d[0x200] ^= 0x10;
        d[0x201] ^= 0x10;
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "SHA-256"), "%s", err);
        d[0x200] ^= 0x10;
        d[0x201] ^= 0x10;
        d[0x200] ^= 0x10;
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "checksum"), "%s", err);
}

Test(app_image, truncated_and_garbage_inputs) {
        _cleanup_free_ uint8_t *d = NULL;
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        d = build(ESP_CHIP_ID_ESP32C3, "1.0.0", 0, false, APP_BEHAVIOUR_OK, &len);
        for (size_t cut = 0; cut < len; cut += cut < 64 ? 7 : 97) {
                err[0] = 0;
                cr_assert_eq(app_image_parse(d, cut, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID, "cut %zu", cut);
                cr_assert(strstr(err, "truncated") || strstr(err, "too short"), "cut %zu: %s", cut, err);
        }
        cr_assert_eq(app_image_parse(d, len - 1, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "truncated"), "%s", err);

        d[0] = 0x7F;
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "magic"), "%s", err);
        d[0] = 0xE9;
        d[1] = 17;
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "segment count"), "%s", err);
        d[1] = 3;
        le32_write(d + 24 + 4, 0xFFFFFFF0);     /* huge first segment */
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "limit"), "%s", err);
}

Test(app_image, unknown_marker_value_is_refused) {
        _cleanup_free_ uint8_t *d = NULL;
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        d = build(ESP_CHIP_ID_ESP32C3, "1.0.0", 0, false, APP_BEHAVIOUR_BOOT_FAIL, &len);
        cr_assert_eq(app_image_behaviour(d, len), APP_BEHAVIOUR_BOOT_FAIL);
        cr_assert_eq(app_image_behaviour(d, 100), APP_BEHAVIOUR_OK);
        le32_write(d + APP_MARKER_OFFSET + 8, 7);
        le32_write(d + APP_MARKER_OFFSET + 12, esp_crc(d + APP_MARKER_OFFSET, 12));
        cr_assert_eq(app_image_behaviour(d, len), APP_BEHAVIOUR_OK);
        cr_assert_eq(app_image_parse(d, len, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "behaviour"), "%s", err);
}

static void same_info(const AppImageInfo *a, const AppImageInfo *b) {
        cr_assert_eq(a->image_len, b->image_len);
        cr_assert_eq(a->signed_len, b->signed_len);
        cr_assert_eq(a->total_len, b->total_len);
        cr_assert_eq(a->n_segments, b->n_segments);
        for (unsigned i = 0; i < a->n_segments; i++) {
                cr_assert_eq(a->segments[i].offset, b->segments[i].offset);
                cr_assert_eq(a->segments[i].length, b->segments[i].length);
                cr_assert_eq(a->segments[i].load_addr, b->segments[i].load_addr);
        }
        cr_assert_eq(a->checksum, b->checksum);
        cr_assert_arr_eq(a->image_hash, b->image_hash, 32);
        cr_assert_eq(a->has_signed_digest, b->has_signed_digest);
        cr_assert_arr_eq(a->signed_digest, b->signed_digest, 32);
        cr_assert_eq(a->has_signature_sector, b->has_signature_sector);
        cr_assert_str_eq(a->desc.version, b->desc.version);
        cr_assert_eq(a->desc.secure_version, b->desc.secure_version);
        cr_assert_eq(a->behaviour, b->behaviour);
        cr_assert_eq(a->header.chip_id, b->header.chip_id);
        cr_assert_eq(a->header.entry_addr, b->header.entry_addr);
}

static int stream(const uint8_t *d, size_t len, size_t chunk, AppImageInfo *info, uint8_t sector[4096],
                  bool *have_sector, char *err, size_t errlen) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;
        size_t desc_at = 0;
        int r;

        cr_assert_eq(app_image_verifier_new(0, &v), 0);
        cr_assert_null(app_image_verifier_desc(v));
        for (size_t off = 0; off < len; off += chunk) {
                size_t n = MIN(chunk, len - off);
                r = app_image_verifier_feed(v, d + off, n, err, errlen);
                if (r < 0)
                        return r;
                if (!desc_at && app_image_verifier_have_desc(v))
                        desc_at = off + n;
        }
        r = app_image_verifier_finish(v, info, err, errlen);
        if (r < 0)
                return r;
        /* esp_https_ota checks the descriptor from the first 1024 bytes */
        cr_assert(desc_at > 0 && desc_at <= MAX(APP_IMAGE_PEEK_LEN, chunk), "desc after %zu bytes", desc_at);
        cr_assert_eq(app_image_verifier_image_len(v), info->image_len);
        *have_sector = app_image_verifier_signature_sector(v) != NULL;
        if (*have_sector)
                memcpy(sector, app_image_verifier_signature_sector(v), 4096);
        return 0;
}

Test(app_image, streaming_matches_whole_buffer) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_free_ uint8_t *img = NULL, *signed_img = NULL;
        static const size_t chunks[] = { 1, 3, 7, 1000, 1024, 4099, 65537, SIZE_MAX };
        uint8_t sector[4096], trusted[1][32];
        AppImageInfo whole, part;
        char err[256] = "";
        size_t len, slen;
        bool have_sector;

        img = build(ESP_CHIP_ID_ESP32C3, "4.5.6", 0, true, APP_BEHAVIOUR_BOOT_FAIL, &len);
        cr_assert_eq(sbv2_load_key(SB "ecdsa256_secure_boot_signing_key.pem", true, &k, err, sizeof err), 0, "%s", err);
        cr_assert_eq(sbv2_sign_file(k, img, len, &signed_img, &slen, err, sizeof err), 0, "%s", err);
        cr_assert_eq(slen, len + 4096);
        cr_assert_eq(sbv2_key_digest(k, trusted[0]), 0);
        cr_assert_eq(app_image_parse(signed_img, slen, &whole, err, sizeof err), 0, "%s", err);
        cr_assert(whole.has_signature_sector);

        for (size_t i = 0; i < ELEMENTSOF(chunks); i++) {
                cr_assert_eq(stream(signed_img, slen, chunks[i], &part, sector, &have_sector, err, sizeof err), 0,
                             "chunk %zu: %s", chunks[i], err);
                same_info(&whole, &part);
                cr_assert(have_sector);
                cr_assert_arr_eq(sector, signed_img + len, 4096);
                /* streaming digest + sector are enough to check the signature */
                cr_assert_eq(sbv2_verify_sector(sector, 4096, part.signed_digest, (const uint8_t (*)[32]) trusted, 1,
                                                NULL, err, sizeof err), 0, "chunk %zu: %s", chunks[i], err);
        }
}

Test(app_image, streaming_unpadded_signed_image) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_free_ uint8_t *img = NULL, *signed_img = NULL;
        uint8_t sector[4096], trusted[1][32], digest[32];
        AppImageInfo whole, part;
        char err[256] = "";
        size_t len, slen;
        bool have_sector;

        /* no --secure-pad-v2: the 0xFF padding up to 4 KiB is part of the signed data */
        img = build(ESP_CHIP_ID_ESP32S3, "4.5.7", 5000, false, APP_BEHAVIOUR_OK, &len);
        cr_assert_eq(len, 5008);
        cr_assert_eq(sbv2_load_key(SB "rsa_secure_boot_signing_key.pem", true, &k, err, sizeof err), 0, "%s", err);
        cr_assert_eq(sbv2_sign_file(k, img, len, &signed_img, &slen, err, sizeof err), 0, "%s", err);
        cr_assert_eq(slen, 8192 + 4096);
        cr_assert_eq(app_image_parse(signed_img, slen, &whole, err, sizeof err), 0, "%s", err);
        cr_assert_eq(whole.signed_len, 8192);
        sha256(signed_img, 8192, digest);
        cr_assert_arr_eq(whole.signed_digest, digest, 32);
        cr_assert_eq(stream(signed_img, slen, 13, &part, sector, &have_sector, err, sizeof err), 0, "%s", err);
        same_info(&whole, &part);
        cr_assert(have_sector);
        cr_assert_eq(sbv2_key_digest(k, trusted[0]), 0);
        cr_assert_eq(sbv2_verify_sector(sector, 4096, part.signed_digest, (const uint8_t (*)[32]) trusted, 1, NULL,
                                        err, sizeof err), 0, "%s", err);
        /* a byte flipped in the 0xFF tail is outside the simple hash but breaks the signature */
        signed_img[6000] = 0x00;
        cr_assert_eq(stream(signed_img, slen, 13, &part, sector, &have_sector, err, sizeof err), 0, "%s", err);
        cr_assert_eq(sbv2_verify_sector(sector, 4096, part.signed_digest, (const uint8_t (*)[32]) trusted, 1, NULL,
                                        err, sizeof err), -ESP_ERR_IMAGE_INVALID);
}

Test(app_image, streaming_reports_errors_early_and_sticky) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;
        _cleanup_free_ uint8_t *img = NULL;
        AppImageInfo info;
        char err[256] = "";
        size_t len;

        img = build(ESP_CHIP_ID_ESP32C3, "1.0.0", 0, false, APP_BEHAVIOUR_OK, &len);
        img[0] = 0x00;
        cr_assert_eq(app_image_verifier_new(0, &v), 0);
        cr_assert_eq(app_image_verifier_feed(v, img, 24, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "magic"), "%s", err);
        err[0] = 0;
        cr_assert_eq(app_image_verifier_feed(v, img + 24, 10, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "magic"), "%s", err);
        cr_assert_eq(app_image_verifier_finish(v, &info, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        v = app_image_verifier_free(v);

        /* a partition-sized limit refuses a bigger image once its length is known */
        img[0] = 0xE9;
        cr_assert_eq(app_image_verifier_new(512, &v), 0);
        cr_assert_eq(app_image_verifier_feed(v, img, len, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "limit"), "%s", err);
}

Test(app_version, compare) {
        static const struct {
                const char *a, *b;
                int sign;
        } cases[] = {
                { "1.10.0", "1.9.2", 1 },
                { "v1.2", "1.2", 0 },
                { "1.2", "1.2.0", 0 },
                { "V2.0", "v1.99.99", 1 },
                { "1.0.0-rc1", "1.0.0", -1 },
                { "1.0.0-rc2", "1.0.0-rc1", 1 },
                { "1.0.0-rc.10", "1.0.0-rc.9", 1 },
                { "1.0.0-alpha", "1.0.0-beta", -1 },
                { "1.0.0-1", "1.0.0-alpha", -1 },
                { "1.0.0-alpha", "1.0.0-alpha.1", -1 },
                { "1.0.0+build5", "1.0.0+build7", 0 },
                { "1.0.1", "1.0.0+zzz", 1 },
                { "2", "1.999", 1 },
                { "10.0", "9.0", 1 },
                { "1.2.3", "1.2.3", 0 },
                { "0.0.1", "0.0.0", 1 },
                { "v3.3-beta3-21-g0706bd0d1-dirty", "v3.3", -1 },
                { "v3.3-beta3-21-g0706bd0d1-dirty", "v3.3-beta3", 1 },
                { "18446744073709551616", "1", 1 },   /* saturates, no overflow */
                { "", "0", 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int r = app_version_compare(cases[i].a, cases[i].b);
                int back = app_version_compare(cases[i].b, cases[i].a);
                cr_assert_eq((r > 0) - (r < 0), cases[i].sign, "'%s' vs '%s': %d", cases[i].a, cases[i].b, r);
                cr_assert_eq((back > 0) - (back < 0), -cases[i].sign, "'%s' vs '%s' reversed", cases[i].b, cases[i].a);
        }
        cr_assert_lt(app_version_compare(NULL, "1"), 0);
        cr_assert_eq(app_version_compare(NULL, NULL), 0);
}

Test(app_image, string_tables) {
        cr_assert_eq(app_behaviour_from_string("no-connect"), APP_BEHAVIOUR_NO_CONNECT);
        cr_assert_eq(app_behaviour_from_string("boot-fail"), APP_BEHAVIOUR_BOOT_FAIL);
        cr_assert_eq(app_behaviour_from_string("crash"), -EINVAL);
        cr_assert_str_eq(app_behaviour_to_string(APP_BEHAVIOUR_OK), "ok");
        cr_assert_eq(esp_chip_id_from_string("esp32c3"), 5);
        cr_assert_eq(esp_chip_id_from_string("esp32s3"), 9);
        cr_assert_eq(esp_chip_id_from_string("esp8266"), -EINVAL);
        cr_assert_str_eq(esp_chip_id_to_string(9), "esp32s3");
}

Test(app_image, mutated_inputs_never_crash) {
        _cleanup_free_ uint8_t *orig = NULL, *d = NULL;
        uint64_t x = 0x1234567887654321ull;
        size_t len;

        /* Deterministic mutations of a small image: every result is either
         * valid or -ESP_ERR_IMAGE_INVALID with a message, streamed or not. */
        orig = build(ESP_CHIP_ID_ESP32C3, "1.0.0", 0, false, APP_BEHAVIOUR_OK, &len);
        d = malloc(len);
        cr_assert(d);
        for (int i = 0; i < 300; i++) {
                AppImageInfo info, sinfo;
                char err[256] = "", serr[256] = "";
                uint8_t sector[4096];
                bool have_sector;
                int r, sr;

                memcpy(d, orig, len);
                for (int k = 0; k < 1 + i % 4; k++) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        /* bias towards the headers, where the structure is */
                        size_t pos = (x >> 8) % (i % 2 ? 64 : len);
                        d[pos] = (uint8_t) x;
                }
                r = app_image_parse(d, len, &info, err, sizeof err);
                cr_assert(r == 0 || r == -ESP_ERR_IMAGE_INVALID, "iteration %d: %d", i, r);
                if (r < 0)
                        cr_assert(err[0], "iteration %d: no message", i);
                sr = stream(d, len, 5, &sinfo, sector, &have_sector, serr, sizeof serr);
                if (r == 0) {
                        cr_assert_eq(sr, 0, "iteration %d: %s", i, serr);
                        same_info(&info, &sinfo);
                }
        }
}
