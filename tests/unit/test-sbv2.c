/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <sys/stat.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "image/sbv2.h"

#define SB VECTORS_DIR "/sbv2/"

static uint8_t *load(const char *name, size_t *len) {
        uint8_t *d = NULL;
        int r = read_full_file(name, 1u << 24, &d, len);
        cr_assert_eq(r, 0, "reading %s: %d", name, r);
        return d;
}

static EVP_PKEY *load_key(const char *name, bool priv) {
        EVP_PKEY *k = NULL;
        char err[256] = "";
        int r = sbv2_load_key(name, priv, &k, err, sizeof err);
        cr_assert_eq(r, 0, "loading %s: %s", name, err);
        return k;
}

static void digest_file(const char *name, uint8_t out[32]) {
        _cleanup_free_ uint8_t *d = NULL;
        size_t len;
        d = load(name, &len);
        cr_assert_eq(len, 32);
        memcpy(out, d, 32);
}

static void sha256(const uint8_t *d, size_t len, uint8_t out[32]) {
        cr_assert_eq(EVP_Digest(d, len, out, NULL, EVP_sha256(), NULL), 1);
}

Test(sbv2, rsa_key_digest_matches_vector) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *priv = load_key(SB "rsa_secure_boot_signing_key.pem", true);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = load_key(SB "rsa_secure_boot_signing_pubkey.pem", false);
        uint8_t want[32], got[32];

        digest_file(SB "rsa_public_key_digest.bin", want);
        cr_assert_eq(sbv2_key_digest(priv, got), 0);
        cr_assert_arr_eq(got, want, 32);
        cr_assert_eq(sbv2_key_digest(pub, got), 0);
        cr_assert_arr_eq(got, want, 32);
}

Test(sbv2, ecdsa_key_digest_matches_vector) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *priv = load_key(SB "ecdsa256_secure_boot_signing_key_v2.pem", true);
        uint8_t want[32], got[32];

        digest_file(SB "ecdsa256_public_key_digest_v2.bin", want);
        cr_assert_eq(sbv2_key_digest(priv, got), 0);
        cr_assert_arr_eq(got, want, 32);
}

Test(sbv2, rsa_block_parses) {
        _cleanup_free_ uint8_t *d = NULL;
        uint8_t want[32], img_digest[32];
        Sbv2Block b[SBV2_MAX_BLOCKS];
        char err[256] = "";
        size_t len;

        d = load(SB "bootloader_signed_v2_rsa.bin", &len);
        cr_assert_eq(len, 32768 + 4096);
        cr_assert_eq(sbv2_parse_sector(d + 32768, 4096, b, err, sizeof err), 1, "%s", err);
        cr_assert_eq(b[0].type, SBV2_KEY_RSA3072);
        cr_assert_eq(b[0].version, 2);
        digest_file(SB "rsa_public_key_digest.bin", want);
        cr_assert_arr_eq(b[0].key_digest, want, 32);
        sha256(d, 32768, img_digest);
        cr_assert_arr_eq(b[0].image_digest, img_digest, 32);
        /* The CRC is the standard CRC-32 of bytes 0..1195. */
        cr_assert_eq(b[0].crc, std_crc32(d + 32768, 1196));
        cr_assert_eq(le32_read(d + 32768 + 1196), std_crc32(d + 32768, 1196));
        cr_assert_eq(sbv2_block_verify(&b[0], img_digest, err, sizeof err), 0, "%s", err);
}

Test(sbv2, bad_crc_is_reported) {
        _cleanup_free_ uint8_t *d = NULL;
        Sbv2Block b[SBV2_MAX_BLOCKS];
        char err[256] = "";
        size_t len;

        d = load(SB "bootloader_signed_v2_rsa.bin", &len);
        d[32768 + 100] ^= 0x01;
        cr_assert_eq(sbv2_parse_sector(d + 32768, 4096, b, err, sizeof err), -ESP_ERR_INVALID_CRC);
        cr_assert(strstr(err, "CRC"), "%s", err);
}

static void verify_vector(const char *file, const char *digest_name, int expect_blocks) {
        _cleanup_free_ uint8_t *d = NULL;
        uint8_t trusted[1][32];
        Sbv2Block b[SBV2_MAX_BLOCKS];
        char err[256] = "";
        unsigned idx = 99;
        size_t len;

        d = load(file, &len);
        digest_file(digest_name, trusted[0]);
        cr_assert(sbv2_file_is_signed(d, len));
        cr_assert_eq(sbv2_parse_sector(d + len - 4096, 4096, b, err, sizeof err), expect_blocks, "%s", err);
        cr_assert_eq(sbv2_verify_file(d, len, (const uint8_t (*)[32]) trusted, 1, &idx, err, sizeof err), 0, "%s", err);
        cr_assert_eq(idx, 0);
}

Test(sbv2, rsa_vector_verifies) {
        verify_vector(SB "bootloader_signed_v2_rsa.bin", SB "rsa_public_key_digest.bin", 1);
}

Test(sbv2, multi_signed_vector_verifies_with_each_key) {
        _cleanup_free_ uint8_t *d = NULL;
        const char *keys[3] = { SB "rsa_secure_boot_signing_key.pem", SB "rsa_secure_boot_signing_key2.pem",
                                SB "rsa_secure_boot_signing_key3.pem" };
        Sbv2Block b[SBV2_MAX_BLOCKS];
        char err[256] = "";
        size_t len;

        verify_vector(SB "bootloader_multi_signed_v2_rsa.bin", SB "rsa_public_key_digest.bin", 3);
        d = load(SB "bootloader_multi_signed_v2_rsa.bin", &len);
        cr_assert_eq(sbv2_parse_sector(d + len - 4096, 4096, b, err, sizeof err), 3);
        for (unsigned i = 0; i < 3; i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key(keys[i], true);
                uint8_t trusted[1][32];
                unsigned idx = 99;

                cr_assert_eq(sbv2_key_digest(k, trusted[0]), 0);
                cr_assert_arr_eq(b[i].key_digest, trusted[0], 32, "block %u", i);
                cr_assert_eq(sbv2_verify_file(d, len, (const uint8_t (*)[32]) trusted, 1, &idx, err, sizeof err), 0,
                             "%s", err);
                cr_assert_eq(idx, i);
        }
}

Test(sbv2, ecdsa_vector_verifies) {
        _cleanup_free_ uint8_t *d = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key(SB "ecdsa256_secure_boot_signing_key.pem", true);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = load_key(SB "ecdsa256_secure_boot_signing_pubkey.pem", false);
        uint8_t trusted[1][32], pubd[32];
        Sbv2Block b[SBV2_MAX_BLOCKS];
        char err[256] = "";
        size_t len;

        d = load(SB "bootloader_signed_v2_ecdsa256.bin", &len);
        cr_assert_eq(sbv2_parse_sector(d + len - 4096, 4096, b, err, sizeof err), 1, "%s", err);
        cr_assert_eq(b[0].type, SBV2_KEY_ECDSA256);
        cr_assert_eq(b[0].version, 3);
        cr_assert_eq(sbv2_key_digest(k, trusted[0]), 0);
        cr_assert_eq(sbv2_key_digest(pub, pubd), 0);
        cr_assert_arr_eq(pubd, trusted[0], 32);
        cr_assert_arr_eq(b[0].key_digest, trusted[0], 32);
        cr_assert_eq(sbv2_verify_file(d, len, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err), 0, "%s", err);
}

Test(sbv2, wrong_digest_is_refused) {
        _cleanup_free_ uint8_t *rsa = NULL, *ec = NULL;
        uint8_t trusted[2][32];
        char err[256] = "";
        size_t rlen, elen;

        rsa = load(SB "bootloader_signed_v2_rsa.bin", &rlen);
        ec = load(SB "bootloader_signed_v2_ecdsa256.bin", &elen);
        digest_file(SB "ecdsa256_public_key_digest_v2.bin", trusted[0]);   /* a different key */
        digest_file(SB "rsa_public_key_digest.bin", trusted[1]);
        trusted[1][0] ^= 0x80;
        cr_assert_eq(sbv2_verify_file(rsa, rlen, (const uint8_t (*)[32]) trusted, 2, NULL, err, sizeof err), -ENOKEY);
        cr_assert(strstr(err, "trusted"), "%s", err);
        cr_assert_eq(sbv2_verify_file(ec, elen, (const uint8_t (*)[32]) trusted, 2, NULL, err, sizeof err), -ENOKEY);
        cr_assert_eq(sbv2_verify_file(rsa, rlen, NULL, 0, NULL, err, sizeof err), -ENOKEY);
}

Test(sbv2, tampered_data_is_refused) {
        _cleanup_free_ uint8_t *d = NULL;
        uint8_t trusted[1][32];
        char err[256] = "";
        size_t len;

        d = load(SB "bootloader_signed_v2_rsa.bin", &len);
        digest_file(SB "rsa_public_key_digest.bin", trusted[0]);
        d[1000] ^= 0x01;
        cr_assert_eq(sbv2_verify_file(d, len, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err),
                     -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "digest"), "%s", err);
}

Test(sbv2, tampered_signature_is_refused) {
        _cleanup_free_ uint8_t *d = NULL;
        uint8_t trusted[1][32];
        char err[256] = "";
        size_t len;
        uint8_t *blk;

        d = load(SB "bootloader_signed_v2_rsa.bin", &len);
        digest_file(SB "rsa_public_key_digest.bin", trusted[0]);
        blk = d + len - 4096;
        blk[900] ^= 0x01;                                        /* inside the signature */
        le32_write(blk + 1196, std_crc32(blk, 1196));           /* keep the CRC valid */
        cr_assert_eq(sbv2_verify_file(d, len, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err), -EBADMSG,
                     "%s", err);
}

Test(sbv2, precalculated_signature_verifies) {
        _cleanup_free_ uint8_t *data = NULL, *sig = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = load_key(SB "rsa_secure_boot_signing_pubkey.pem", false);
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        uint8_t digest[32];
        size_t len, slen;

        /* Cross-check of our PSS parameters against an independent signer. */
        data = load(SB "bootloader_unsigned_v2.bin", &len);
        sig = load(SB "pre_calculated_bootloader_signature_rsa.bin", &slen);
        sha256(data, len, digest);
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
        cr_assert(ctx);
        cr_assert_eq(EVP_PKEY_verify_init(ctx), 1);
        cr_assert_eq(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING), 1);
        cr_assert_eq(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()), 1);
        cr_assert_eq(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()), 1);
        cr_assert_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32), 1);
        cr_assert_eq(EVP_PKEY_verify(ctx, sig, slen, digest, 32), 1);
}

Test(sbv2, signing_unsigned_vector_matches_espsecure) {
        _cleanup_free_ uint8_t *in = NULL, *ref = NULL, *out = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key(SB "rsa_secure_boot_signing_key.pem", true);
        uint8_t trusted[1][32];
        char err[256] = "";
        size_t len, rlen, olen;

        in = load(SB "bootloader_unsigned_v2.bin", &len);
        ref = load(SB "bootloader_signed_v2_rsa.bin", &rlen);
        cr_assert_eq(sbv2_sign_file(k, in, len, &out, &olen, err, sizeof err), 0, "%s", err);
        cr_assert_eq(olen, rlen);
        /* data, and every block field before the signature: identical */
        cr_assert_arr_eq(out, ref, len + 812);
        /* the randomised PSS signature differs, then the CRC; zeros and 0xFF tail identical */
        cr_assert_arr_neq(out + len + 812, ref + len + 812, 384);
        cr_assert_arr_eq(out + len + 1200, ref + len + 1200, 4096 - 1200);
        digest_file(SB "rsa_public_key_digest.bin", trusted[0]);
        cr_assert_eq(sbv2_verify_file(out, olen, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err), 0, "%s", err);
}

Test(sbv2, signing_ecdsa_matches_layout) {
        _cleanup_free_ uint8_t *in = NULL, *ref = NULL, *out = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key(SB "ecdsa256_secure_boot_signing_key.pem", true);
        uint8_t trusted[1][32];
        char err[256] = "";
        size_t len, rlen, olen;

        in = load(SB "bootloader_unsigned_v2.bin", &len);
        ref = load(SB "bootloader_signed_v2_ecdsa256.bin", &rlen);
        cr_assert_eq(sbv2_sign_file(k, in, len, &out, &olen, err, sizeof err), 0, "%s", err);
        cr_assert_eq(olen, rlen);
        cr_assert_arr_eq(out, ref, len + 101);                  /* through curve, X, Y */
        cr_assert_arr_eq(out + len + 165, ref + len + 165, 1196 - 165);
        cr_assert_arr_eq(out + len + 1200, ref + len + 1200, 4096 - 1200);
        cr_assert_eq(sbv2_key_digest(k, trusted[0]), 0);
        cr_assert_eq(sbv2_verify_file(out, olen, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err), 0, "%s", err);
}

Test(sbv2, append_up_to_three_blocks) {
        _cleanup_free_ uint8_t *in = NULL, *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k1 = load_key(SB "rsa_secure_boot_signing_key.pem", true);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k2 = load_key(SB "ecdsa256_secure_boot_signing_key.pem", true);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k3 = load_key(SB "rsa_secure_boot_signing_key3.pem", true);
        Sbv2Block b[SBV2_MAX_BLOCKS];
        uint8_t trusted[1][32];
        char err[256] = "";
        size_t len, l1, l2, l3, l4;
        unsigned idx;

        /* An odd length is padded with 0xFF to 4 KiB first. */
        in = load(SB "bootloader_unsigned_v2.bin", &len);
        len -= 100;
        cr_assert_eq(sbv2_sign_file(k1, in, len, &s1, &l1, err, sizeof err), 0, "%s", err);
        cr_assert_eq(l1, 32768 + 4096);
        cr_assert_eq(s1[len], 0xFF);
        cr_assert_eq(sbv2_sign_file(k2, s1, l1, &s2, &l2, err, sizeof err), 0, "%s", err);
        cr_assert_eq(sbv2_sign_file(k3, s2, l2, &s3, &l3, err, sizeof err), 0, "%s", err);
        cr_assert_eq(l3, l1);
        cr_assert_eq(sbv2_parse_sector(s3 + l3 - 4096, 4096, b, err, sizeof err), 3, "%s", err);
        cr_assert_eq(b[1].type, SBV2_KEY_ECDSA256);
        cr_assert_eq(sbv2_sign_file(k1, s3, l3, &s4, &l4, err, sizeof err), -E2BIG);
        cr_assert_eq(sbv2_key_digest(k3, trusted[0]), 0);
        cr_assert_eq(sbv2_verify_file(s3, l3, (const uint8_t (*)[32]) trusted, 1, &idx, err, sizeof err), 0, "%s", err);
        cr_assert_eq(idx, 2);
        cr_assert_eq(sbv2_sector_first_key_digest(s3 + l3 - 4096, 4096, trusted[0], err, sizeof err), 0);
        cr_assert_arr_eq(trusted[0], b[0].key_digest, 32);
}

Test(sbv2, unsigned_file_is_not_signed) {
        _cleanup_free_ uint8_t *in = NULL;
        uint8_t trusted[1][32] = {};
        char err[256] = "";
        size_t len;

        in = load(SB "bootloader_unsigned_v2.bin", &len);
        cr_assert_not(sbv2_file_is_signed(in, len));
        cr_assert_eq(sbv2_verify_file(in, len, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err),
                     -ESP_ERR_IMAGE_INVALID);
        cr_assert(strstr(err, "not signed"), "%s", err);
        cr_assert_eq(sbv2_verify_file(in, 100, (const uint8_t (*)[32]) trusted, 1, NULL, err, sizeof err),
                     -ESP_ERR_IMAGE_INVALID);
}

Test(sbv2, other_keys_are_refused) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *rsa2k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        uint8_t block[SBV2_BLOCK_SIZE], digest[32] = {};
        char err[256] = "";

        cr_assert_eq(sbv2_key_type(rsa2k, err, sizeof err), -EOPNOTSUPP);
        cr_assert(strstr(err, "2048"), "%s", err);
        cr_assert_eq(sbv2_key_type(p384, err, sizeof err), -EOPNOTSUPP);
        cr_assert_eq(sbv2_key_type(ed, err, sizeof err), -EOPNOTSUPP);
        cr_assert_eq(sbv2_sign_digest(rsa2k, digest, block), -EOPNOTSUPP);
}

Test(sbv2, generate_save_load) {
        char dir[] = "/tmp/test-sbv2-XXXXXX", path[64], pubpath[64], err[256] = "";
        struct stat st;

        cr_assert(mkdtemp(dir));
        for (int t = 0; t < _SBV2_KEY_TYPE_MAX; t++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *back = NULL, *pub = NULL;
                uint8_t d1[32], d2[32], d3[32], blk[SBV2_BLOCK_SIZE], digest[32] = { 1, 2, 3 };
                Sbv2Block b;

                /* RSA-3072 generation is slow-ish; one of each is enough. */
                cr_assert_eq(sbv2_generate_key(t, &k), 0);
                cr_assert_eq(sbv2_key_type(k, NULL, 0), t);
                snprintf(path, sizeof path, "%s/key%d.pem", dir, t);
                snprintf(pubpath, sizeof pubpath, "%s/pub%d.pem", dir, t);
                cr_assert_eq(sbv2_save_private_key(k, path), 0);
                cr_assert_eq(stat(path, &st), 0);
                cr_assert_eq(st.st_mode & 0777, 0600);
                cr_assert_eq(sbv2_save_public_key(k, pubpath), 0);
                cr_assert_eq(sbv2_load_key(path, true, &back, err, sizeof err), 0, "%s", err);
                cr_assert_eq(sbv2_load_key(pubpath, true, &pub, err, sizeof err), -EBADMSG);  /* no private half */
                cr_assert_eq(sbv2_load_key(pubpath, false, &pub, err, sizeof err), 0, "%s", err);
                cr_assert_eq(sbv2_key_digest(k, d1), 0);
                cr_assert_eq(sbv2_key_digest(back, d2), 0);
                cr_assert_eq(sbv2_key_digest(pub, d3), 0);
                cr_assert_arr_eq(d1, d2, 32);
                cr_assert_arr_eq(d1, d3, 32);
                cr_assert_eq(sbv2_sign_digest(back, digest, blk), 0);
                cr_assert_eq(sbv2_parse_block(blk, sizeof blk, &b, err, sizeof err), 0, "%s", err);
                cr_assert_eq(sbv2_block_verify(&b, digest, err, sizeof err), 0, "%s", err);
                digest[0] ^= 1;
                cr_assert_eq(sbv2_block_verify(&b, digest, err, sizeof err), -ESP_ERR_IMAGE_INVALID);
                unlink(path);
                unlink(pubpath);
        }
        rmdir(dir);
}

Test(sbv2, load_key_errors_name_the_file) {
        EVP_PKEY *k = NULL;
        char err[256] = "";

        cr_assert_lt(sbv2_load_key("/nonexistent/key.pem", true, &k, err, sizeof err), 0);
        cr_assert(strstr(err, "/nonexistent/key.pem"), "%s", err);
        cr_assert_eq(sbv2_load_key(SB "rsa_public_key_digest.bin", false, &k, err, sizeof err), -EBADMSG);
        cr_assert(strstr(err, "rsa_public_key_digest.bin"), "%s", err);
}
