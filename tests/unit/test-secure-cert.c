/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

#include <openssl/pem.h>

#include "basic/crc.h"
#include "basic/fileio.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "dsemu/secure-cert.h"

#define DS_VECTORS VECTORS_DIR "/ds/"

static uint8_t *read_vector(const char *name, size_t *len) {
        uint8_t *data = NULL;
        char path[512];

        snprintf(path, sizeof(path), DS_VECTORS "%s", name);
        cr_assert_eq(read_full_file(path, 1 << 20, &data, len), 0, "read %s", path);
        return data;
}

/* c3-rsa2048.json: HMAC key 00..1f, IV a0..af (see the vector README). */
static void kat_ds_data(DsData *d) {
        _cleanup_free_ uint8_t *pem = NULL;
        uint8_t hk[32], iv[DS_IV_LEN];
        size_t len;
        BIO *bio;
        EVP_PKEY *key;

        cr_assert_eq(hex_decode_fixed("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", hk, 32), 0);
        cr_assert_eq(hex_decode_fixed("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", iv, 16), 0);
        pem = read_vector("kat2048.pem", &len);
        bio = BIO_new_mem_buf(pem, (int) len);
        key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
        cr_assert_not_null(key);
        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, key, hk, iv, d), 0);
        EVP_PKEY_free(key);
}

Test(secure_cert, vector_byte_identical) {
        _cleanup_free_ uint8_t *want = NULL, *dev = NULL, *ca = NULL;
        uint8_t out[SECURE_CERT_PARTITION_SIZE];
        size_t want_len, dev_len, ca_len;
        DsData d;
        int used;

        want = read_vector("c3-rsa2048.esp_secure_cert.bin", &want_len);
        cr_assert_eq(want_len, SECURE_CERT_PARTITION_SIZE);
        dev = read_vector("kat2048.crt", &dev_len);
        ca = read_vector("kat-ca.crt", &ca_len);
        kat_ds_data(&d);

        used = secure_cert_build_rsa_ds((char *) dev, (char *) ca, &d, 1, 2048, out, sizeof(out));
        cr_assert_gt(used, 0);
        cr_assert_eq(used, 3008);
        for (size_t i = 0; i < sizeof(out); i++)
                cr_assert_eq(out[i], want[i], "byte %zu: 0x%02x, vector has 0x%02x", i, out[i], want[i]);
}

Test(secure_cert, parse_vector) {
        _cleanup_free_ uint8_t *img = NULL, *dev_pem = NULL;
        _cleanup_(secure_cert_freep) SecureCert *c = NULL;
        _cleanup_(X509_freep) X509 *dev = NULL, *ca = NULL, *want_dev = NULL;
        const SecureCertTlv *t;
        size_t len, dev_len;
        char err[256] = "";
        DsData d, want_d;
        unsigned block, bits;
        BIO *bio;

        img = read_vector("c3-rsa2048.esp_secure_cert.bin", &len);
        cr_assert_eq(secure_cert_parse(img, len, &c, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(secure_cert_n_tlvs(c), 4);
        static const SecureCertTlvType order[] = {
                SECURE_CERT_DEV_CERT, SECURE_CERT_CA_CERT, SECURE_CERT_DS_DATA, SECURE_CERT_DS_CONTEXT,
        };
        for (size_t i = 0; i < 4; i++) {
                t = secure_cert_tlv(c, i);
                cr_assert_eq(t->type, order[i]);
                cr_assert_eq(t->subtype, 0);
                cr_assert_eq(t->flags, 0);
        }
        cr_assert_null(secure_cert_tlv(c, 4));
        t = secure_cert_find(c, SECURE_CERT_DS_CONTEXT, 0);
        cr_assert_not_null(t);
        cr_assert_eq(t->offset, 2976);
        static const uint8_t ctx[8] = { 0, 0, 0, 0, 1, 0, 0x00, 0x08 };
        cr_assert_arr_eq(t->value, ctx, 8);
        cr_assert_null(secure_cert_find(c, SECURE_CERT_PRIV_KEY, 0));

        cr_assert_eq(secure_cert_get_ds(c, ESP_CHIP_ESP32C3, &d, &block, &bits), 0);
        cr_assert_eq(block, 1);
        cr_assert_eq(bits, 2048);
        kat_ds_data(&want_d);
        cr_assert_eq(d.rsa_length, 63);
        cr_assert_arr_eq(d.iv, want_d.iv, DS_IV_LEN);
        cr_assert_arr_eq(d.c, want_d.c, 1200);
        /* The S3 layout does not fit a C3 DS_DATA. */
        cr_assert_eq(secure_cert_get_ds(c, ESP_CHIP_ESP32S3, &d, &block, &bits), -EBADMSG);

        cr_assert_eq(secure_cert_get_x509(c, SECURE_CERT_DEV_CERT, &dev), 0);
        cr_assert_eq(secure_cert_get_x509(c, SECURE_CERT_CA_CERT, &ca), 0);
        dev_pem = read_vector("kat2048.crt", &dev_len);
        bio = BIO_new_mem_buf(dev_pem, (int) dev_len);
        want_dev = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        cr_assert_eq(X509_cmp(dev, want_dev), 0);
        /* (kat2048.crt is self-signed; kat-ca.crt is simply carried along.) */
        _cleanup_free_ uint8_t *ca_pem = NULL;
        _cleanup_(X509_freep) X509 *want_ca = NULL;
        size_t ca_len;
        ca_pem = read_vector("kat-ca.crt", &ca_len);
        bio = BIO_new_mem_buf(ca_pem, (int) ca_len);
        want_ca = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
        cr_assert_eq(X509_cmp(ca, want_ca), 0);
}

Test(secure_cert, type_names) {
        cr_assert_str_eq(secure_cert_tlv_type_to_string(SECURE_CERT_DS_CONTEXT), "DS_CONTEXT");
        cr_assert_str_eq(secure_cert_tlv_type_to_string(SECURE_CERT_USER_DATA_5), "USER_DATA_5");
        cr_assert_null(secure_cert_tlv_type_to_string(20));
        cr_assert_eq(secure_cert_tlv_type_from_string("DEV_CERT"), SECURE_CERT_DEV_CERT);
        cr_assert_eq(secure_cert_tlv_type_from_string("nope"), _SECURE_CERT_TLV_TYPE_INVALID);
}

Test(secure_cert, corrupt_crc_names_tlv) {
        _cleanup_free_ uint8_t *img = NULL;
        SecureCert *c = NULL;
        char err[256] = "";
        size_t len;

        img = read_vector("c3-rsa2048.esp_secure_cert.bin", &len);
        img[1728 + 12 + 100] ^= 1;      /* inside DS_DATA's value */
        cr_assert_eq(secure_cert_parse(img, len, &c, err, sizeof(err)), -EBADMSG);
        cr_assert_null(c);
        cr_assert(strstr(err, "DS_DATA") && strstr(err, "CRC") && strstr(err, "1728"), "err: %s", err);
}

Test(secure_cert, length_past_end) {
        _cleanup_free_ uint8_t *img = NULL;
        SecureCert *c = NULL;
        char err[256] = "";
        size_t len;

        img = read_vector("c3-rsa2048.esp_secure_cert.bin", &len);
        le16_write(img + 2976 + 10, 0xfff0);
        cr_assert_eq(secure_cert_parse(img, len, &c, err, sizeof(err)), -EBADMSG);
        cr_assert(strstr(err, "DS_CONTEXT") && strstr(err, "past"), "err: %s", err);
        /* A truncated partition also stops inside a TLV. */
        cr_assert_eq(secure_cert_parse(img, 1000, &c, err, sizeof(err)), -EBADMSG);
}

Test(secure_cert, erased_or_garbage) {
        uint8_t buf[64];
        SecureCert *c = NULL;
        char err[256] = "";

        memset(buf, 0xff, sizeof(buf));
        cr_assert_eq(secure_cert_parse(buf, sizeof(buf), &c, err, sizeof(err)), -ENODATA);
        cr_assert(strstr(err, "erased"), "err: %s", err);
        memset(buf, 0x42, sizeof(buf));
        cr_assert_eq(secure_cert_parse(buf, sizeof(buf), &c, err, sizeof(err)), -ENODATA);
        cr_assert(strstr(err, "magic"), "err: %s", err);
        cr_assert_eq(secure_cert_parse(buf, 0, &c, err, sizeof(err)), -ENODATA);
}

Test(secure_cert, append_layout) {
        uint8_t buf[64];
        size_t pos = 0;

        memset(buf, 0xee, sizeof(buf));
        cr_assert_eq(secure_cert_tlv_append(buf, sizeof(buf), &pos, 51, 2, 0, "abc", 3), 0);
        cr_assert_eq(pos, 12 + 16 + 4);
        cr_assert_eq(le32_read(buf), SECURE_CERT_TLV_MAGIC);
        cr_assert_eq(buf[8], 51);
        cr_assert_eq(buf[9], 2);
        cr_assert_eq(le16_read(buf + 10), 3);
        for (size_t i = 15; i < 28; i++)
                cr_assert_eq(buf[i], 0);
        cr_assert_eq(le32_read(buf + 28), esp_crc(buf, 28));
        /* An exact multiple of 16 gets no padding. */
        cr_assert_eq(secure_cert_tlv_append(buf, sizeof(buf), &pos, 52, 0, 0, "0123456789abcdef", 16), 0);
        cr_assert_eq(pos, 32 + 12 + 16 + 4);
        cr_assert_eq(secure_cert_tlv_append(buf, sizeof(buf), &pos, 53, 0, 0, "x", 1), -ENOBUFS);
        cr_assert_eq(pos, 64);
}

Test(secure_cert, flash_region_round_trip) {
        _cleanup_free_ uint8_t *dev = NULL, *ca = NULL;
        _cleanup_(secure_cert_freep) SecureCert *c = NULL;
        char path[] = "/tmp/test-secure-cert-XXXXXX", file[64], err[256] = "";
        uint8_t img[SECURE_CERT_PARTITION_SIZE];
        size_t dev_len, ca_len;
        Flash *f = NULL;
        DsData d, back;
        unsigned block, bits;
        int used;

        cr_assert_not_null(mkdtemp(path));
        snprintf(file, sizeof(file), "%s/flash.bin", path);
        cr_assert_eq(flash_open(file, FLASH_OPEN_CREATE, FLASH_DEFAULT_SIZE, &f), 0);
        FlashRegion r = { .flash = f, .offset = 0xD000, .size = 0x2000 };

        /* Erased partition first. */
        cr_assert_eq(secure_cert_read_region(&r, &c, err, sizeof(err)), -ENODATA);

        dev = read_vector("kat2048.crt", &dev_len);
        ca = read_vector("kat-ca.crt", &ca_len);
        kat_ds_data(&d);
        used = secure_cert_build_rsa_ds((char *) dev, NULL, &d, 3, 2048, img, sizeof(img));
        cr_assert_gt(used, 0);
        cr_assert_eq(secure_cert_write_region(&r, img, sizeof(img)), 0);
        cr_assert_eq(secure_cert_read_region(&r, &c, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(secure_cert_n_tlvs(c), 3);
        cr_assert_null(secure_cert_find(c, SECURE_CERT_CA_CERT, 0));
        X509 *x = NULL;
        cr_assert_eq(secure_cert_get_x509(c, SECURE_CERT_CA_CERT, &x), -ENOENT);
        cr_assert_eq(secure_cert_get_ds(c, ESP_CHIP_ESP32C3, &back, &block, &bits), 0);
        cr_assert_eq(block, 3);
        cr_assert_eq(bits, 2048);
        cr_assert_arr_eq(back.c, d.c, d.c_len);

        /* Rewriting (with the CA now) replaces the old content. */
        used = secure_cert_build_rsa_ds((char *) dev, (char *) ca, &d, 1, 2048, img, sizeof(img));
        cr_assert_gt(used, 0);
        cr_assert_eq(secure_cert_write_region(&r, img, sizeof(img)), 0);
        c = secure_cert_free(c);
        cr_assert_eq(secure_cert_read_region(&r, &c, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(secure_cert_n_tlvs(c), 4);

        /* Inconsistent arguments are refused. */
        cr_assert_eq(secure_cert_build_rsa_ds((char *) dev, NULL, &d, 6, 2048, img, sizeof(img)), -EINVAL);
        cr_assert_eq(secure_cert_build_rsa_ds((char *) dev, NULL, &d, 1, 3072, img, sizeof(img)), -EINVAL);
        cr_assert_eq(secure_cert_build_rsa_ds((char *) dev, (char *) ca, &d, 1, 2048, img, 2048), -ENOBUFS);

        flash_close(f);
        unlink(file);
        rmdir(path);
}

Test(secure_cert, ds_context_checks) {
        _cleanup_free_ uint8_t *img = NULL;
        _cleanup_(secure_cert_freep) SecureCert *c = NULL;
        size_t len, pos;
        uint8_t ctx[8];
        DsData d;

        /* DS_CONTEXT saying 3072 bits for a 2048-bit DS_DATA is refused. */
        img = read_vector("c3-rsa2048.esp_secure_cert.bin", &len);
        pos = 2976;
        secure_cert_ds_context(1, 3072, ctx);
        memset(img + pos, 0xff, len - pos);
        cr_assert_eq(secure_cert_tlv_append(img, len, &pos, SECURE_CERT_DS_CONTEXT, 0, 0, ctx, 8), 0);
        cr_assert_eq(secure_cert_parse(img, len, &c, NULL, 0), 0);
        cr_assert_eq(secure_cert_get_ds(c, ESP_CHIP_ESP32C3, &d, NULL, NULL), -EBADMSG);
}
