/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "dsemu/ds.h"

#define DS_VECTORS VECTORS_DIR "/ds/"

/* Pulls "key": "value" out of a vector's small JSON file. */
static void json_string(const char *json, const char *key, char *out, size_t size) {
        char pat[64];
        const char *p, *q;

        snprintf(pat, sizeof(pat), "\"%s\": \"", key);
        p = strstr(json, pat);
        cr_assert_not_null(p, "key %s in vector JSON", key);
        p += strlen(pat);
        q = strchr(p, '"');
        cr_assert_not_null(q);
        cr_assert_lt((size_t) (q - p), size);
        memcpy(out, p, (size_t) (q - p));
        out[q - p] = '\0';
}

static EVP_PKEY *load_key(const char *name) {
        char path[512];
        FILE *f;
        EVP_PKEY *k;

        snprintf(path, sizeof(path), DS_VECTORS "%s", name);
        f = fopen(path, "re");
        cr_assert_not_null(f, "open %s", path);
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        cr_assert_not_null(k, "parse %s", path);
        return k;
}

static EVP_PKEY *gen_key(unsigned bits) {
        EVP_PKEY *k = EVP_RSA_gen(bits);
        cr_assert_not_null(k);
        return k;
}

/* Public half only, as the device certificate gives it. */
static EVP_PKEY *public_of(EVP_PKEY *k) {
        unsigned char *der = NULL;
        const unsigned char *p;
        int n = i2d_PUBKEY(k, &der);
        EVP_PKEY *pub;

        cr_assert_gt(n, 0);
        p = der;
        pub = d2i_PUBKEY(NULL, &p, n);
        OPENSSL_free(der);
        cr_assert_not_null(pub);
        return pub;
}

typedef struct Kat {
        const char *name;
        EspChip chip;
} Kat;

static void check_kat(const Kat *kat) {
        _cleanup_free_ uint8_t *json = NULL, *c = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        char path[512], keyname[64], hex[128], target[32];
        uint8_t hmac_key[32], iv[DS_IV_LEN];
        size_t json_len, c_len;
        DsData d;

        snprintf(path, sizeof(path), DS_VECTORS "%s.json", kat->name);
        cr_assert_eq(read_full_file(path, 4096, &json, &json_len), 0);
        json_string((char *) json, "target", target, sizeof(target));
        cr_assert_eq(esp_chip_from_string(target), kat->chip);
        json_string((char *) json, "key", keyname, sizeof(keyname));
        json_string((char *) json, "hmac_key", hex, sizeof(hex));
        cr_assert_eq(hex_decode_fixed(hex, hmac_key, sizeof(hmac_key)), 0);
        json_string((char *) json, "iv", hex, sizeof(hex));
        cr_assert_eq(hex_decode_fixed(hex, iv, sizeof(iv)), 0);

        snprintf(path, sizeof(path), DS_VECTORS "%s.c.bin", kat->name);
        cr_assert_eq(read_full_file(path, 4096, &c, &c_len), 0);
        cr_assert_eq(c_len, ds_c_len(kat->chip));

        key = load_key(keyname);
        cr_assert_eq(ds_encrypt_params(kat->chip, key, hmac_key, iv, &d), 0);
        cr_assert_eq(d.c_len, c_len);
        cr_assert_eq(d.rsa_length, (uint32_t) EVP_PKEY_get_bits(key) / 32 - 1);
        cr_assert_arr_eq(d.iv, iv, DS_IV_LEN);
        cr_assert_arr_eq(d.c, c, c_len, "%s: C differs from configure_ds.py's", kat->name);

        /* And the peripheral accepts it: Z verifies with the public key. */
        _cleanup_(efuse_freep) Efuse *e = NULL;
        size_t len = EVP_PKEY_get_bits(key) / 8;
        uint8_t x[512], z[512], x_be[512], back[512];
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *vctx = NULL;
        size_t back_len = sizeof(back);

        cr_assert_eq(efuse_new(kat->chip, &e), 0);
        cr_assert_eq(efuse_burn_key(e, 1, hmac_key, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        memset(x_be, 0, len);
        memcpy(x_be + 1, "espfleet known answer", 21);
        memcpy(x, x_be, len);
        memrev(x, len);
        cr_assert_eq(ds_sign(e, 1, &d, x, len, z), 0);
        memrev(z, len);
        vctx = EVP_PKEY_CTX_new(key, NULL);
        cr_assert(EVP_PKEY_verify_recover_init(vctx) > 0);
        cr_assert(EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_NO_PADDING) > 0);
        cr_assert(EVP_PKEY_verify_recover(vctx, back, &back_len, z, len) > 0);
        cr_assert_eq(back_len, len);
        cr_assert_arr_eq(back, x_be, len);
}

Test(ds, kat_c3_rsa2048) {
        check_kat(&(Kat) { "c3-rsa2048", ESP_CHIP_ESP32C3 });
}

Test(ds, kat_c3_rsa3072) {
        check_kat(&(Kat) { "c3-rsa3072", ESP_CHIP_ESP32C3 });
}

Test(ds, kat_s3_rsa2048) {
        check_kat(&(Kat) { "s3-rsa2048", ESP_CHIP_ESP32S3 });
}

Test(ds, sizes) {
        cr_assert_eq(ds_c_len(ESP_CHIP_ESP32C3), 1200);
        cr_assert_eq(ds_c_len(ESP_CHIP_ESP32S3), 1584);
        cr_assert_eq(ds_max_key_bits(ESP_CHIP_ESP32C3), 3072);
        cr_assert_eq(ds_max_key_bits(ESP_CHIP_ESP32S3), 4096);
        cr_assert_eq(DS_DATA_LEN(ds_c_len(ESP_CHIP_ESP32C3)), 1220);
        cr_assert_eq(DS_DATA_LEN(ds_c_len(ESP_CHIP_ESP32S3)), 1604);
}

/* The raw RSA private operation through OpenSSL, big-endian. */
static void openssl_raw(EVP_PKEY *key, const uint8_t *in, size_t len, uint8_t *out) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
        size_t out_len = len;

        cr_assert_not_null(ctx);
        cr_assert(EVP_PKEY_sign_init(ctx) > 0);
        cr_assert(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) > 0);
        cr_assert(EVP_PKEY_sign(ctx, out, &out_len, in, len) > 0);
        cr_assert_eq(out_len, len);
}

/* Burns a random HMAC key in BLOCK_KEY<block>, encrypts `key` under it. */
static Efuse *provision(EspChip chip, EVP_PKEY *key, unsigned block, EfuseKeyPurpose purpose, DsData *d) {
        uint8_t hmac_key[32], iv[DS_IV_LEN];
        Efuse *e;

        cr_assert_eq(RAND_bytes(hmac_key, sizeof(hmac_key)), 1);
        cr_assert_eq(RAND_bytes(iv, sizeof(iv)), 1);
        cr_assert_eq(efuse_new(chip, &e), 0);
        cr_assert_eq(efuse_burn_key(e, block, hmac_key, purpose, true), 0);
        cr_assert_eq(ds_encrypt_params(chip, key, hmac_key, iv, d), 0);
        return e;
}

static void round_trip(EspChip chip, EVP_PKEY *key) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = public_of(key);
        _cleanup_(ds_key_freep) DsKey *k = NULL;
        _cleanup_(efuse_freep) Efuse *e = NULL;
        size_t len = EVP_PKEY_get_bits(key) / 8;
        uint8_t in[512], want[512], x[512], z[512], out[512];
        DsData d;

        e = provision(chip, key, 2, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d);
        cr_assert_eq(d.c_len, ds_c_len(chip));
        cr_assert_eq(ds_key_new(e, 2, &d, pub, &k), 0);
        cr_assert_eq(ds_key_bits(k), len * 8);
        cr_assert_eq(ds_key_public(k), pub);
        cr_assert(ds_key_has_crt(k), "p and q recovered from (n, e, d)");

        for (int round = 0; round < 3; round++) {
                cr_assert_eq(RAND_bytes(in, (int) len), 1);
                in[0] &= 0x7f;          /* below the modulus */
                openssl_raw(key, in, len, want);

                /* Peripheral view: LE in, LE out. */
                memcpy(x, in, len);
                memrev(x, len);
                cr_assert_eq(ds_sign(e, 2, &d, x, len, z), 0);
                memrev(z, len);
                cr_assert_arr_eq(z, want, len, "ds_sign != raw RSA (%zu bits)", len * 8);

                /* DsKey (CRT cache) gives the same bytes. */
                cr_assert_eq(ds_key_sign_raw(k, in, len, out), 0);
                cr_assert_arr_eq(out, want, len, "ds_key_sign_raw != raw RSA (%zu bits)", len * 8);
        }
}

Test(ds, round_trip_c3_1024) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = gen_key(1024);
        round_trip(ESP_CHIP_ESP32C3, k);
}

/* A public exponent above 32 bits skips the fast small-e factoring, so this
 * goes through the randomized square-root-of-one recovery instead; both must
 * give the CRT form and the same bytes as the raw operation. */
Test(ds, round_trip_large_public_exponent) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        _cleanup_(BN_freep) BIGNUM *e = BN_new();
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;

        cr_assert(ctx && e);
        cr_assert(BN_set_word(e, 0x100000001ULL)); /* 2^32 + 1: odd, 33 bits */
        cr_assert_gt(EVP_PKEY_keygen_init(ctx), 0);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 1024), 0);
        cr_assert_gt(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, e), 0);
        cr_assert_gt(EVP_PKEY_keygen(ctx, &k), 0);
        round_trip(ESP_CHIP_ESP32C3, k);
}

Test(ds, round_trip_c3_2048) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key("kat2048.pem");
        round_trip(ESP_CHIP_ESP32C3, k);
}

Test(ds, round_trip_c3_3072) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key("kat3072.pem");
        round_trip(ESP_CHIP_ESP32C3, k);
}

Test(ds, round_trip_s3_2048_3072) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k2 = load_key("kat2048.pem");
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k3 = load_key("kat3072.pem");
        round_trip(ESP_CHIP_ESP32S3, k2);
        round_trip(ESP_CHIP_ESP32S3, k3);
}

Test(ds, round_trip_s3_4096, .timeout = 120) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = gen_key(4096);
        round_trip(ESP_CHIP_ESP32S3, k);
}

Test(ds, c3_refuses_4096_key, .timeout = 120) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = gen_key(4096);
        uint8_t hk[32] = { 1 }, iv[DS_IV_LEN] = { 0 };
        DsData d;

        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, k, hk, iv, &d), -EINVAL);
        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32S3, k, hk, iv, &d), 0);
}

Test(ds, refuses_public_or_non_rsa_key) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key("kat2048.pem");
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = public_of(k);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ec = EVP_EC_gen("P-256");
        uint8_t hk[32] = { 1 }, iv[DS_IV_LEN] = { 0 };
        DsData d;

        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, pub, hk, iv, &d), -EINVAL);
        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, ec, hk, iv, &d), -EINVAL);
}

/* ---- Tamper cases: each gives the §1.6 code and a zeroed output ---- */

typedef struct Fixture {
        EVP_PKEY *key;
        Efuse *e;
        DsData d;
        size_t len;
        uint8_t x[512];         /* room for the bad-length cases */
        uint8_t z[512];
} Fixture;

static void fixture_init(Fixture *f, unsigned block, EfuseKeyPurpose purpose) {
        f->key = load_key("kat2048.pem");
        f->e = provision(ESP_CHIP_ESP32C3, f->key, block, purpose, &f->d);
        f->len = 256;
        memset(f->x, 0, sizeof(f->x));
        memset(f->x, 0x11, f->len);
        f->x[f->len - 1] = 0;   /* LE: most significant byte */
        memset(f->z, 0xAA, f->len);
}

static void fixture_done(Fixture *f) {
        EVP_PKEY_free(f->key);
        efuse_free(f->e);
}

static void assert_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(p[i], 0, "output byte %zu not zeroed", i);
}

static void expect_sign(Fixture *f, unsigned block, const DsData *d, int expect) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = public_of(f->key);
        _cleanup_(ds_key_freep) DsKey *k = NULL;
        uint8_t in[256], out[256];
        int r;

        r = ds_sign(f->e, block, d, f->x, f->len, f->z);
        cr_assert_eq(r, expect, "ds_sign: got %s, want %s", esp_err_to_name(r), esp_err_to_name(expect));
        if (expect < 0)
                assert_zero(f->z, f->len);

        /* Same through the DsKey (which must not trust its cache). */
        cr_assert_eq(ds_key_new(f->e, block, d, pub, &k), 0);
        cr_assert_eq(ds_key_has_crt(k), expect == 0);
        memcpy(in, f->x, f->len);
        memrev(in, f->len);
        memset(out, 0xAA, sizeof(out));
        r = ds_key_sign_raw(k, in, f->len, out);
        cr_assert_eq(r, expect, "ds_key_sign_raw: got %s, want %s", esp_err_to_name(r), esp_err_to_name(expect));
        if (expect < 0)
                assert_zero(out, f->len);
}

Test(ds_tamper, good_baseline) {
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        expect_sign(&f, 1, &f.d, 0);
        fixture_done(&f);
}

Test(ds_tamper, flipped_bit_in_c) {
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        for (size_t pos = 0; pos < f.d.c_len; pos += 397) {
                DsData t = f.d;
                t.c[pos] ^= 0x04;
                expect_sign(&f, 1, &t, -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST);
        }
        fixture_done(&f);
}

Test(ds_tamper, flipped_bit_in_iv) {
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        DsData t = f.d;
        t.iv[15] ^= 0x80;
        expect_sign(&f, 1, &t, -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST);
        fixture_done(&f);
}

Test(ds_tamper, wrong_efuse_key) {
        Fixture f;
        uint8_t other[32];
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        cr_assert_eq(RAND_bytes(other, 32), 1);
        cr_assert_eq(efuse_burn_key(f.e, 3, other, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        expect_sign(&f, 3, &f.d, -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST);
        fixture_done(&f);
}

Test(ds_tamper, wrong_purpose) {
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_UP);
        expect_sign(&f, 1, &f.d, -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);
        fixture_done(&f);
}

Test(ds_tamper, hmac_down_all_accepted) {
        Fixture f;
        fixture_init(&f, 4, EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL);
        expect_sign(&f, 4, &f.d, 0);
        fixture_done(&f);
}

/* A blank block has purpose USER: the HMAC configuration fails, as on the
 * chip (issue #9 §4: it used to give INVALID_KEY). */
Test(ds_tamper, empty_block) {
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        expect_sign(&f, 0, &f.d, -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);
        fixture_done(&f);
}

Test(ds_tamper, bad_padding) {
        /* Re-encrypt a plaintext whose β is wrong but whose MD is right (the
         * MD does not cover β): only the last CBC block changes. */
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        _cleanup_(efuse_freep) Efuse *e = NULL;
        uint8_t hk[32], iv[DS_IV_LEN], aes[32], pt[1200];
        unsigned ml = 0;
        int n = 0, n2 = 0;
        DsData d;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = NULL;

        memset(hk, 0x5c, sizeof(hk));
        memset(iv, 0x3a, sizeof(iv));
        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &e), 0);
        cr_assert_eq(efuse_burn_key(e, 5, hk, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, f.key, hk, iv, &d), 0);

        static const uint8_t ff[32] = { [0 ... 31] = 0xff };
        cr_assert_not_null(HMAC(EVP_sha256(), hk, 32, ff, 32, aes, &ml));
        {
                _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
                cr_assert(EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), NULL, aes, iv));
                EVP_CIPHER_CTX_set_padding(c, 0);
                cr_assert(EVP_DecryptUpdate(c, pt, &n, d.c, 1200));
                cr_assert(EVP_DecryptFinal_ex(c, pt + n, &n2));
        }
        cr_assert_eq(pt[1199], 0x08);
        pt[1199] = 0x07;
        {
                _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
                cr_assert(EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), NULL, aes, iv));
                EVP_CIPHER_CTX_set_padding(c, 0);
                cr_assert(EVP_EncryptUpdate(c, d.c, &n, pt, 1200));
                cr_assert(EVP_EncryptFinal_ex(c, d.c + n, &n2));
        }
        Efuse *saved = f.e;
        f.e = e;
        expect_sign(&f, 5, &d, -ESP_ERR_HW_CRYPTO_DS_INVALID_PADDING);
        f.e = saved;
        fixture_done(&f);
}

Test(ds_tamper, bad_arguments) {
        Fixture f;
        fixture_init(&f, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE);
        DsData t = f.d;

        cr_assert_eq(ds_sign(f.e, 6, &f.d, f.x, f.len, f.z), -ESP_ERR_INVALID_ARG);
        cr_assert_eq(ds_sign(f.e, 1, &f.d, f.x, 128, f.z), -ESP_ERR_INVALID_ARG);
        cr_assert_eq(ds_sign(f.e, 1, NULL, f.x, f.len, f.z), -ESP_ERR_INVALID_ARG);
        t.rsa_length = 30;
        cr_assert_eq(ds_sign(f.e, 1, &t, f.x, 124, f.z), -ESP_ERR_INVALID_ARG);
        /* 4096 bits is not a C3 size. */
        t.rsa_length = 127;
        cr_assert_eq(ds_sign(f.e, 1, &t, f.x, 512, f.z), -ESP_ERR_INVALID_ARG);
        /* The stored rsa_length disagrees with the authenticated one. */
        t = f.d;
        t.rsa_length = 31;
        cr_assert_eq(ds_sign(f.e, 1, &t, f.x, 128, f.z), -ESP_ERR_INVALID_ARG);
        fixture_done(&f);
}

Test(ds, input_above_modulus_matches_hardware) {
        /* X >= M: the hardware reduces; the DsKey must give the same bytes as
         * the plain peripheral path, not an OpenSSL error. */
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = load_key("kat2048.pem");
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = public_of(key);
        _cleanup_(ds_key_freep) DsKey *k = NULL;
        _cleanup_(efuse_freep) Efuse *e = NULL;
        uint8_t in[256], x[256], z[256], out[256];
        DsData d;

        e = provision(ESP_CHIP_ESP32C3, key, 0, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d);
        cr_assert_eq(ds_key_new(e, 0, &d, pub, &k), 0);
        memset(in, 0xff, sizeof(in));
        memcpy(x, in, 256);
        cr_assert_eq(ds_sign(e, 0, &d, x, 256, z), 0);
        memrev(z, 256);
        cr_assert_eq(ds_key_sign_raw(k, in, 256, out), 0);
        cr_assert_arr_eq(out, z, 256);
}

Test(ds, key_modulus_must_match_certificate) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = load_key("kat2048.pem");
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *other = gen_key(2048);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = public_of(other);
        _cleanup_(efuse_freep) Efuse *e = NULL;
        DsKey *k = NULL;
        DsData d;

        e = provision(ESP_CHIP_ESP32C3, key, 0, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d);
        cr_assert_eq(ds_key_new(e, 0, &d, pub, &k), -EKEYREJECTED);
        cr_assert_null(k);
}

Test(ds, data_bytes_round_trip) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = load_key("kat2048.pem");
        _cleanup_(efuse_freep) Efuse *e = NULL;
        uint8_t buf[DS_DATA_LEN(DS_C_LEN_MAX)];
        size_t n = 0;
        DsData d, back;

        e = provision(ESP_CHIP_ESP32S3, key, 0, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d);
        cr_assert_eq(ds_data_to_bytes(&d, buf, sizeof(buf), &n), 0);
        cr_assert_eq(n, 1604);
        cr_assert_eq(le32_read(buf), 63);
        cr_assert_eq(ds_data_to_bytes(&d, buf, 1000, &n), -ENOBUFS);
        cr_assert_eq(ds_data_from_bytes(ESP_CHIP_ESP32S3, buf, 1604, &back), 0);
        cr_assert_eq(back.rsa_length, 63);
        cr_assert_eq(back.c_len, 1584);
        cr_assert_arr_eq(back.iv, d.iv, DS_IV_LEN);
        cr_assert_arr_eq(back.c, d.c, 1584);
        /* Wrong chip (size), bad rsa_length. */
        cr_assert_eq(ds_data_from_bytes(ESP_CHIP_ESP32C3, buf, 1604, &back), -EBADMSG);
        le32_write(buf, 64);
        cr_assert_eq(ds_data_from_bytes(ESP_CHIP_ESP32S3, buf, 1604, &back), -EBADMSG);
}

/* The fingerprint names the key the DS would use, whatever HMAC key and IV
 * sealed it, and goes through the same checks as signing. */
Test(ds, params_fingerprint) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k1 = load_key("kat2048.pem"), *k2 = gen_key(2048);
        uint8_t f1[DS_FINGERPRINT_LEN], f1b[DS_FINGERPRINT_LEN], f2[DS_FINGERPRINT_LEN];
        DsData d1, d1b, d2;
        Efuse *e1 = provision(ESP_CHIP_ESP32C3, k1, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d1);
        Efuse *e1b = provision(ESP_CHIP_ESP32C3, k1, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d1b);
        Efuse *e2 = provision(ESP_CHIP_ESP32C3, k2, 1, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, &d2);

        cr_assert_neq(memcmp(d1.c, d1b.c, d1.c_len), 0, "two sealings gave the same ciphertext");
        cr_assert_eq(ds_params_fingerprint(e1, 1, &d1, f1), 0);
        cr_assert_eq(ds_params_fingerprint(e1b, 1, &d1b, f1b), 0);
        cr_assert_eq(ds_params_fingerprint(e2, 1, &d2, f2), 0);
        cr_assert_eq(memcmp(f1, f1b, sizeof f1), 0, "same key, different fingerprints");
        cr_assert_neq(memcmp(f1, f2, sizeof f1), 0, "different keys, same fingerprint");

        /* another device's eFuse cannot unseal it; a flipped bit fails the MD */
        cr_assert_eq(ds_params_fingerprint(e2, 1, &d1, f1), -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST);
        assert_zero(f1, sizeof f1);
        d1b.c[7] ^= 1;
        cr_assert_eq(ds_params_fingerprint(e1b, 1, &d1b, f1b), -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST);
        cr_assert_eq(ds_params_fingerprint(e1, 0, &d1, f1), -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);

        efuse_free(e1);
        efuse_free(e1b);
        efuse_free(e2);
}
