/* SPDX-License-Identifier: MIT */
/* ESP app images (esp-formats.md §5) and their Secure Boot V2 signature
 * sector (§6.1), verified as the bootloader does against fixed trusted key
 * digests: the RSA-3072 and ECDSA P-256 test keys of VECTORS_DIR/sbv2.
 *
 * The input is the signed file. It is parsed whole, and streamed through
 * the OTA verifier in chunks of changing sizes: both must come to the same
 * result, byte for byte (app-image.h promises it). When the image is valid
 * and carries a sector, the sector is verified against the digest the
 * parser computed; a file of whole sectors also goes through espsecure's
 * verify-signature path. */

#include <openssl/err.h>

#include "basic/esp-err.h"
#include "fuzz-util.h"
#include "image/app-image.h"
#include "image/sbv2.h"

static uint8_t trusted[3][SBV2_KEY_DIGEST_LEN];

static void trust_key(const char *name, uint8_t digest[SBV2_KEY_DIGEST_LEN]) {
        char path[4096], err[FUZZ_ERR_LEN] = "";
        EVP_PKEY *key = NULL;
        int r;

        snprintf(path, sizeof path, "%s/%s", VECTORS_DIR, name);
        r = sbv2_load_key(path, false, &key, err, sizeof err);
        fuzz_check(r == 0, "trusted key: %s", err);
        r = sbv2_key_digest(key, digest);
        fuzz_check(r == 0, "sbv2_key_digest: %d", r);
        EVP_PKEY_free(key);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        fuzz_read_vector("sbv2/rsa_public_key_digest.bin", trusted[0], SBV2_KEY_DIGEST_LEN);
        trust_key("sbv2/ecdsa256_secure_boot_signing_pubkey.pem", trusted[1]);
        fuzz_read_vector("sbv2/ecdsa256_public_key_digest_v2.bin", trusted[2], SBV2_KEY_DIGEST_LEN);
        return 0;
}

/* Chunk sizes from a fixed sequence (deterministic for a given input size):
 * 1-byte chunks, chunks that straddle every header, and big ones. */
static size_t next_chunk(uint32_t *state) {
        static const size_t sizes[] = { 1, 7, 24, 8, 3, 256, 1000, 16, 4095, 4096, 31, 65536 };

        *state = *state * 1103515245u + 12345u;
        return sizes[(*state >> 16) % ELEMENTSOF(sizes)];
}

static void check_same_info(const AppImageInfo *a, const AppImageInfo *b) {
        fuzz_check(memcmp(&a->header, &b->header, sizeof a->header) == 0, "header differs");
        fuzz_check(a->has_desc == b->has_desc && (!a->has_desc || memcmp(&a->desc, &b->desc, sizeof a->desc) == 0),
                   "app descriptor differs");
        fuzz_check(a->behaviour == b->behaviour && a->has_marker == b->has_marker, "marker differs");
        fuzz_check(a->n_segments == b->n_segments &&
                   memcmp(a->segments, b->segments, a->n_segments * sizeof a->segments[0]) == 0, "segments differ");
        fuzz_check(a->checksum == b->checksum && a->image_len == b->image_len && a->signed_len == b->signed_len &&
                   a->total_len == b->total_len, "lengths differ: %zu/%zu/%zu vs %zu/%zu/%zu", a->image_len,
                   a->signed_len, a->total_len, b->image_len, b->signed_len, b->total_len);
        fuzz_check(memcmp(a->image_hash, b->image_hash, sizeof a->image_hash) == 0, "image hash differs");
        fuzz_check(a->has_signed_digest == b->has_signed_digest &&
                   memcmp(a->signed_digest, b->signed_digest, sizeof a->signed_digest) == 0, "signed digest differs");
        fuzz_check(a->has_signature_sector == b->has_signature_sector, "signature sector differs");
}

static void stream(const uint8_t *data, size_t size, int r_parse, const AppImageInfo *parsed, const char *err_parse) {
        _cleanup_(app_image_verifier_freep) AppImageVerifier *v = NULL;
        char err[FUZZ_ERR_LEN] = "";
        AppImageInfo info;
        uint32_t state = (uint32_t) size;
        size_t off = 0;
        int r;

        r = app_image_verifier_new(0, &v);
        fuzz_check(r == 0, "app_image_verifier_new: %d", r);
        while (off < size) {
                size_t n = next_chunk(&state);   /* not inside MIN(): it would be called twice */

                n = MIN(n, size - off);

                r = app_image_verifier_feed(v, data + off, n, err, sizeof err);
                fuzz_check_err(r, err, sizeof err, "app_image_verifier_feed");
                off += n;
                fuzz_check(app_image_verifier_bytes_fed(v) == off || r < 0, "fed %zu, counted %zu", off,
                           app_image_verifier_bytes_fed(v));
                fuzz_check(app_image_verifier_have_desc(v) == !!app_image_verifier_desc(v) &&
                           app_image_verifier_have_desc(v) == !!app_image_verifier_header(v),
                           "have_desc disagrees with desc()/header()");
                if (r < 0)
                        break;
        }
        err[0] = 0;
        r = app_image_verifier_finish(v, &info, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "app_image_verifier_finish");
        fuzz_check(r == r_parse, "streamed: %d (%s), parsed whole: %d (%s)", r, err, r_parse, err_parse);
        /* An image with two defects may be named by either: the stream sees
         * the descriptor (esp_https_ota's first check) before the whole
         * parse walks the segments (the bootloader's order). One defect, one
         * message (found by a campaign: a bad descriptor and a bad segment). */
        fuzz_check(streq(err, err_parse) || (r < 0 && *err && *err_parse), "streamed: '%s', parsed whole: '%s'", err,
                   err_parse);
        if (r < 0)
                return;
        check_same_info(parsed, &info);
        const uint8_t *sector = app_image_verifier_signature_sector(v);
        fuzz_check(!!sector == info.has_signature_sector, "signature_sector() vs has_signature_sector");
        if (sector)
                fuzz_check(memcmp(sector, data + info.signed_len, SBV2_SECTOR_SIZE) == 0,
                           "the verifier kept another signature sector");
}

static void check_sector(const uint8_t *sector, const uint8_t digest[SBV2_DIGEST_LEN]) {
        Sbv2Block blocks[SBV2_MAX_BLOCKS];
        char err[FUZZ_ERR_LEN] = "";
        uint8_t first[SBV2_KEY_DIGEST_LEN];
        unsigned which = 99;
        int r, n;

        r = sbv2_verify_sector(sector, SBV2_SECTOR_SIZE, digest, (const uint8_t (*)[SBV2_KEY_DIGEST_LEN]) trusted,
                               ELEMENTSOF(trusted), &which, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "sbv2_verify_sector");

        if (r == 0) {
                /* Accepted: by a block with a trusted key that verifies. The
                 * other blocks may be broken: the bootloader skips them, where
                 * sbv2_parse_sector() refuses the sector (sbv2.h). */
                Sbv2Block b;

                fuzz_check(which < SBV2_MAX_BLOCKS, "accepted by block %u", which);
                err[0] = 0;
                r = sbv2_parse_block(sector + which * SBV2_BLOCK_SIZE, SBV2_BLOCK_SIZE, &b, err, sizeof err);
                fuzz_check(r == 0, "the accepting block %u does not parse: %s", which, err);
                fuzz_check(memcmp(b.key_digest, trusted[0], SBV2_KEY_DIGEST_LEN) == 0 ||
                           memcmp(b.key_digest, trusted[1], SBV2_KEY_DIGEST_LEN) == 0 ||
                           memcmp(b.key_digest, trusted[2], SBV2_KEY_DIGEST_LEN) == 0,
                           "accepted by block %u whose key is not trusted", which);
                err[0] = 0;
                r = sbv2_block_verify(&b, digest, err, sizeof err);
                fuzz_check(r == 0, "the accepting block does not verify on its own: %s", err);
        }

        err[0] = 0;
        n = sbv2_parse_sector(sector, SBV2_SECTOR_SIZE, blocks, err, sizeof err);
        fuzz_check_err(n, err, sizeof err, "sbv2_parse_sector");
        fuzz_check(n <= (int) SBV2_MAX_BLOCKS, "%d blocks", n);
        for (int i = 0; i < n; i++) {
                EVP_PKEY *key = NULL;

                err[0] = 0;
                r = sbv2_block_verify(&blocks[i], digest, err, sizeof err);
                fuzz_check_err(r, err, sizeof err, "sbv2_block_verify");
                r = sbv2_block_public_key(&blocks[i], &key);
                if (r == 0) {
                        uint8_t d[SBV2_KEY_DIGEST_LEN];
                        r = sbv2_key_digest(key, d);
                        fuzz_check(r == 0 && memcmp(d, blocks[i].key_digest, sizeof d) == 0,
                                   "block %d: its key's digest is not the digest it was parsed with", i);
                        EVP_PKEY_free(key);
                }
        }
        err[0] = 0;
        r = sbv2_sector_first_key_digest(sector, SBV2_SECTOR_SIZE, first, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "sbv2_sector_first_key_digest");
        if (r == 0 && n > 0)
                fuzz_check(memcmp(first, blocks[0].key_digest, sizeof first) == 0, "first key digest");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char err[FUZZ_ERR_LEN] = "";
        AppImageInfo info;
        int r;

        r = app_image_parse(data, size, &info, err, sizeof err);
        fuzz_check_err(r, err, sizeof err, "app_image_parse");
        fuzz_check(r == 0 || r == -ESP_ERR_IMAGE_INVALID, "app_image_parse: %d", r);
        stream(data, size, r, &info, err);

        if (r == 0) {
                fuzz_check(info.has_desc && info.image_len <= size && info.signed_len >= info.image_len &&
                           info.signed_len % SBV2_SECTOR_SIZE == 0 && info.total_len == size,
                           "a valid image with inconsistent lengths");
                fuzz_check(app_image_behaviour(data, size) == info.behaviour, "app_image_behaviour disagrees");
                (void) esp_chip_id_to_string(info.header.chip_id);
                (void) app_version_compare(info.desc.version, "1.0.0");
                if (info.has_signature_sector) {
                        fuzz_check(info.has_signed_digest && info.signed_len + SBV2_SECTOR_SIZE <= size,
                                   "sector without digest");
                        check_sector(data + info.signed_len, info.signed_digest);
                }
        }

        if (size % SBV2_SECTOR_SIZE == 0) {
                bool is_signed = sbv2_file_is_signed(data, size);
                err[0] = 0;
                r = sbv2_verify_file(data, size, (const uint8_t (*)[SBV2_KEY_DIGEST_LEN]) trusted, ELEMENTSOF(trusted),
                                     NULL, err, sizeof err);
                fuzz_check_err(r, err, sizeof err, "sbv2_verify_file");
                if (size >= 2 * SBV2_SECTOR_SIZE) {
                        Sbv2Block blocks[SBV2_MAX_BLOCKS];
                        int n = sbv2_parse_sector(data + size - SBV2_SECTOR_SIZE, SBV2_SECTOR_SIZE, blocks, NULL, 0);
                        fuzz_check(is_signed == (n > 0), "file_is_signed %d, parse_sector %d", is_signed, n);
                } else
                        fuzz_check(!is_signed && r < 0, "a file of one sector is signed or verifies");
        }

        ERR_clear_error();
        return 0;
}
