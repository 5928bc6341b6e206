/* SPDX-License-Identifier: MIT */
#define LOG_TOPIC LOG_TOPIC_IMAGE

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "basic/crc.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "basic/string-table.h"
#include "basic/errmsg.h"
#include "image/sbv2.h"

/* Block layout, esp-formats.md §6.1. */
#define RSA_BITS 3072
#define RSA_LEN (RSA_BITS / 8)
#define OFF_DIGEST 4
#define OFF_RSA_N 36
#define OFF_RSA_E (OFF_RSA_N + RSA_LEN)         /* 420 */
#define OFF_RSA_R (OFF_RSA_E + 4)               /* 424 */
#define OFF_RSA_MPRIME (OFF_RSA_R + RSA_LEN)    /* 808 */
#define OFF_RSA_SIG (OFF_RSA_MPRIME + 4)        /* 812 */
#define RSA_KEY_END OFF_RSA_SIG                 /* key digest covers [36, 812) */

#define EC_LEN 32
#define OFF_EC_CURVE 36
#define OFF_EC_X 37
#define OFF_EC_Y (OFF_EC_X + EC_LEN)
#define OFF_EC_SIG (OFF_EC_Y + EC_LEN)          /* 101: r, then s */
#define EC_KEY_END OFF_EC_SIG                   /* key digest covers [36, 101) */

#define CURVE_P192 1
#define CURVE_P256 2
#define CURVE_P384 3

DEFINE_TRIVIAL_CLEANUP_FUNC(ECDSA_SIG *, ECDSA_SIG_free);

static const char *const sbv2_key_type_table[_SBV2_KEY_TYPE_MAX] = {
        [SBV2_KEY_RSA3072] = "rsa3072",
        [SBV2_KEY_ECDSA256] = "ecdsa256",
};

DEFINE_STRING_TABLE_LOOKUP(sbv2_key_type, Sbv2KeyType);

static int sha256(const void *data, size_t len, uint8_t out[32]) {
        return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static const char *ossl_reason(char *buf, size_t size) {
        return openssl_last_error(buf, size, "unknown OpenSSL error");
}

/* ---------------------------------------------------------------------- */
/* keys                                                                    */

int sbv2_key_type(EVP_PKEY *key, char *err, size_t errlen) {
        if (!key)
                return -EINVAL;
        if (EVP_PKEY_is_a(key, "RSA")) {
                int bits = EVP_PKEY_get_bits(key);
                if (bits != RSA_BITS)
                        return errf(err, errlen, -EOPNOTSUPP,
                                           "RSA key has %d bits; Secure Boot V2 on ESP32-C3/S3 needs RSA-3072", bits);
                return SBV2_KEY_RSA3072;
        }
        if (EVP_PKEY_is_a(key, "EC")) {
                char group[64] = "";
                if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) != 1 ||
                    (!streq(group, "prime256v1") && !streq(group, "P-256")))
                        return errf(err, errlen, -EOPNOTSUPP,
                                           "EC key on curve '%s'; only P-256 (prime256v1) is supported",
                                           group[0] ? group : "?");
                return SBV2_KEY_ECDSA256;
        }
        return errf(err, errlen, -EOPNOTSUPP, "%s key: only RSA-3072 and EC P-256 keys can sign",
                           EVP_PKEY_get0_type_name(key) ?: "unknown");
}

int sbv2_generate_key(Sbv2KeyType type, EVP_PKEY **ret) {
        EVP_PKEY *k = NULL;

        if (!ret)
                return -EINVAL;
        switch (type) {
        case SBV2_KEY_RSA3072:
                k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) RSA_BITS);
                break;
        case SBV2_KEY_ECDSA256:
                k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                break;
        case _SBV2_KEY_TYPE_MAX:
        case _SBV2_KEY_TYPE_INVALID:
                return -EINVAL;
        }
        if (!k)
                return -EIO;
        *ret = k;
        return 0;
}

int sbv2_load_key(const char *path, bool want_private, EVP_PKEY **ret, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        char reason[256];
        size_t size;
        int r;

        if (!path || !ret)
                return -EINVAL;
        r = read_full_file(path, 64 * 1024, &data, &size);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot read key: %s", path, strerror(-r));
        bio = BIO_new_mem_buf(data, (int) size);
        if (!bio)
                return -ENOMEM;
        k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        if (!k && !want_private) {
                ERR_clear_error();
                (void) BIO_reset(bio);
                k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        }
        explicit_bzero(data, size);
        if (!k)
                return errf(err, errlen, -EBADMSG, "%s: not a PEM %s key (%s)", path,
                                   want_private ? "private" : "private or public", ossl_reason(reason, sizeof reason));
        r = sbv2_key_type(k, reason, sizeof reason);
        if (r < 0)
                return errf(err, errlen, r, "%s: %s", path, reason);
        *ret = TAKE_PTR(k);
        return 0;
}

static int save_pem(EVP_PKEY *key, const char *path, bool private, mode_t mode) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        char *mem;
        long n;
        int r;

        if (!key || !path)
                return -EINVAL;
        bio = BIO_new(BIO_s_secmem());
        if (!bio)
                return -ENOMEM;
        if (private ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1
                    : PEM_write_bio_PUBKEY(bio, key) != 1)
                return -EIO;
        n = BIO_get_mem_data(bio, &mem);
        if (n <= 0)
                return -EIO;
        r = write_file_atomic(path, mem, (size_t) n, mode);
        return r;
}

int sbv2_save_private_key(EVP_PKEY *key, const char *path) {
        return save_pem(key, path, true, 0600);
}

int sbv2_save_public_key(EVP_PKEY *key, const char *path) {
        return save_pem(key, path, false, 0644);
}

/* -n⁻¹ mod 2³² (Montgomery's M′) from the low word of an odd modulus. */
static uint32_t mont_mprime(uint32_t n0) {
        uint32_t inv = n0;      /* correct to 3 bits for odd n0; each step doubles */
        for (int i = 0; i < 5; i++)
                inv *= 2 - n0 * inv;
        return (uint32_t) -inv;
}

/* Encodes the public part of a block: RSA n, e, R, M′ at 36..811, or ECDSA
 * curve, X, Y at 36..100. */
static int encode_public(EVP_PKEY *key, Sbv2KeyType type, uint8_t *block) {
        switch (type) {
        case SBV2_KEY_RSA3072: {
                _cleanup_(BN_freep) BIGNUM *n = NULL, *e = NULL, *rr = NULL;
                _cleanup_(BN_CTX_freep) BN_CTX *ctx = NULL;
                uint64_t ev;

                if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
                    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
                        return -EIO;
                if (BN_num_bits(e) > 32 || !BN_is_odd(n))
                        return -EOPNOTSUPP;
                ev = BN_get_word(e);
                ctx = BN_CTX_new();
                rr = BN_new();
                if (!ctx || !rr)
                        return -ENOMEM;
                /* R = 2^(2·3072) mod n */
                if (BN_set_bit(rr, 2 * RSA_BITS) != 1 || BN_mod(rr, rr, n, ctx) != 1)
                        return -EIO;
                if (BN_bn2lebinpad(n, block + OFF_RSA_N, RSA_LEN) != RSA_LEN ||
                    BN_bn2lebinpad(rr, block + OFF_RSA_R, RSA_LEN) != RSA_LEN)
                        return -EIO;
                le32_write(block + OFF_RSA_E, (uint32_t) ev);
                le32_write(block + OFF_RSA_MPRIME, mont_mprime(le32_read(block + OFF_RSA_N)));
                return 0;
        }
        case SBV2_KEY_ECDSA256: {
                _cleanup_(BN_freep) BIGNUM *x = NULL, *y = NULL;

                if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
                    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1)
                        return -EIO;
                block[OFF_EC_CURVE] = CURVE_P256;
                if (BN_bn2lebinpad(x, block + OFF_EC_X, EC_LEN) != EC_LEN ||
                    BN_bn2lebinpad(y, block + OFF_EC_Y, EC_LEN) != EC_LEN)
                        return -EIO;
                return 0;
        }
        case _SBV2_KEY_TYPE_MAX:
        case _SBV2_KEY_TYPE_INVALID:
                break;
        }
        return -EINVAL;
}

static int key_digest_of_block(const uint8_t *block, Sbv2KeyType type, uint8_t ret[SBV2_KEY_DIGEST_LEN]) {
        switch (type) {
        case SBV2_KEY_RSA3072:
                return sha256(block + OFF_RSA_N, RSA_KEY_END - OFF_RSA_N, ret);
        case SBV2_KEY_ECDSA256:
                return sha256(block + OFF_EC_CURVE, EC_KEY_END - OFF_EC_CURVE, ret);
        case _SBV2_KEY_TYPE_MAX:
        case _SBV2_KEY_TYPE_INVALID:
                break;
        }
        return -EINVAL;
}

int sbv2_key_digest(EVP_PKEY *key, uint8_t ret[SBV2_KEY_DIGEST_LEN]) {
        uint8_t block[SBV2_BLOCK_SIZE] = {};
        int type, r;

        type = sbv2_key_type(key, NULL, 0);
        if (type < 0)
                return type;
        r = encode_public(key, type, block);
        if (r < 0)
                return r;
        return key_digest_of_block(block, type, ret);
}

/* ---------------------------------------------------------------------- */
/* blocks                                                                  */

static void block_seal(uint8_t *block) {
        le32_write(block + SBV2_CRC_OFFSET, std_crc32(block, SBV2_CRC_OFFSET));
        memset(block + SBV2_CRC_OFFSET + 4, 0, SBV2_BLOCK_SIZE - SBV2_CRC_OFFSET - 4);
}

int sbv2_sign_digest(EVP_PKEY *key, const uint8_t image_digest[SBV2_DIGEST_LEN], uint8_t ret_block[SBV2_BLOCK_SIZE]) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        uint8_t block[SBV2_BLOCK_SIZE] = {};
        uint8_t sig[512];
        size_t sig_len = sizeof sig;
        int type, r;

        type = sbv2_key_type(key, NULL, 0);
        if (type < 0)
                return type;
        block[0] = SBV2_MAGIC;
        block[1] = type == SBV2_KEY_RSA3072 ? SBV2_VERSION_RSA : SBV2_VERSION_ECDSA;
        block[2] = 0;           /* RSA: zero; ECDSA: SHA scheme 0 = SHA-256 */
        memcpy(block + OFF_DIGEST, image_digest, SBV2_DIGEST_LEN);
        r = encode_public(key, type, block);
        if (r < 0)
                return r;

        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (!ctx || EVP_PKEY_sign_init(ctx) != 1)
                return -EIO;
        if (type == SBV2_KEY_RSA3072) {
                /* espsecure: PSS, MGF1-SHA256, salt 32, over the prehashed digest. */
                if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1 ||
                    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1 ||
                    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) != 1)
                        return -EIO;
                if (EVP_PKEY_sign(ctx, sig, &sig_len, image_digest, SBV2_DIGEST_LEN) != 1 || sig_len != RSA_LEN)
                        return -EIO;
                memrev(sig, RSA_LEN);
                memcpy(block + OFF_RSA_SIG, sig, RSA_LEN);
        } else {
                _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *es = NULL;
                const unsigned char *p = sig;
                const BIGNUM *sr, *ss;

                if (EVP_PKEY_sign(ctx, sig, &sig_len, image_digest, SBV2_DIGEST_LEN) != 1)
                        return -EIO;
                es = d2i_ECDSA_SIG(NULL, &p, (long) sig_len);
                if (!es)
                        return -EIO;
                ECDSA_SIG_get0(es, &sr, &ss);
                if (BN_bn2lebinpad(sr, block + OFF_EC_SIG, EC_LEN) != EC_LEN ||
                    BN_bn2lebinpad(ss, block + OFF_EC_SIG + EC_LEN, EC_LEN) != EC_LEN)
                        return -EIO;
        }
        block_seal(block);
        memcpy(ret_block, block, SBV2_BLOCK_SIZE);
        return 0;
}

int sbv2_parse_block(const uint8_t *raw, size_t len, Sbv2Block *ret, char *err, size_t errlen) {
        uint32_t crc, stored;
        Sbv2KeyType type;
        int r;

        if (!raw || !ret)
                return -EINVAL;
        if (len < SBV2_BLOCK_SIZE)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID, "signature block truncated (%zu of %u bytes)",
                                   len, SBV2_BLOCK_SIZE);
        if (raw[0] != SBV2_MAGIC)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID, "bad signature block magic 0x%02x (expected 0x%02x)",
                                   raw[0], SBV2_MAGIC);
        crc = std_crc32(raw, SBV2_CRC_OFFSET);
        stored = le32_read(raw + SBV2_CRC_OFFSET);
        if (crc != stored)
                return errf(err, errlen, -ESP_ERR_INVALID_CRC,
                                   "signature block CRC mismatch: stored 0x%08x, computed 0x%08x", stored, crc);
        switch (raw[1]) {
        case SBV2_VERSION_RSA:
                type = SBV2_KEY_RSA3072;
                break;
        case SBV2_VERSION_ECDSA:
                if (raw[2] != 0)
                        return errf(err, errlen, -EOPNOTSUPP,
                                           "ECDSA signature block uses SHA scheme %u; only SHA-256 (0) is supported", raw[2]);
                if (raw[OFF_EC_CURVE] != CURVE_P256)
                        return errf(err, errlen, -EOPNOTSUPP,
                                           "ECDSA signature block on curve id %u; only P-256 (2) is supported",
                                           raw[OFF_EC_CURVE]);
                type = SBV2_KEY_ECDSA256;
                break;
        default:
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "signature block version %u is not Secure Boot V2 (2 = RSA, 3 = ECDSA)", raw[1]);
        }

        *ret = (Sbv2Block) {
                .type = type,
                .version = raw[1],
                .crc = stored,
        };
        memcpy(ret->raw, raw, SBV2_BLOCK_SIZE);
        memcpy(ret->image_digest, raw + OFF_DIGEST, SBV2_DIGEST_LEN);
        r = key_digest_of_block(raw, type, ret->key_digest);
        if (r < 0)
                return r;
        return 0;
}

static int block_public_key(const Sbv2Block *b, EVP_PKEY **ret, char *err, size_t errlen) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
        _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
        _cleanup_(BN_freep) BIGNUM *n = NULL, *e = NULL;
        EVP_PKEY *k = NULL;
        char reason[256];

        bld = OSSL_PARAM_BLD_new();
        if (!bld)
                return -ENOMEM;
        switch (b->type) {
        case SBV2_KEY_RSA3072: {
                uint8_t check[SBV2_BLOCK_SIZE] = {};
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *tmp = NULL;

                n = BN_lebin2bn(b->raw + OFF_RSA_N, RSA_LEN, NULL);
                e = BN_new();
                if (!n || !e || BN_set_word(e, le32_read(b->raw + OFF_RSA_E)) != 1)
                        return -ENOMEM;
                if (BN_num_bits(n) != RSA_BITS || !BN_is_odd(n) || BN_is_zero(e))
                        return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                           "signature block holds no valid RSA-3072 modulus");
                if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
                    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1)
                        return -ENOMEM;
                params = OSSL_PARAM_BLD_to_param(bld);
                ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
                if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
                    EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
                        return errf(err, errlen, -ESP_ERR_IMAGE_INVALID, "signature block RSA key: %s",
                                           ossl_reason(reason, sizeof reason));
                tmp = k;
                /* The device computes with R and M′ as stored: they must match n. */
                if (encode_public(k, SBV2_KEY_RSA3072, check) < 0 ||
                    memcmp(check + OFF_RSA_R, b->raw + OFF_RSA_R, RSA_LEN + 4) != 0)
                        return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                           "signature block's R / M' do not belong to its modulus");
                *ret = TAKE_PTR(tmp);
                return 0;
        }
        case SBV2_KEY_ECDSA256: {
                uint8_t point[1 + 2 * EC_LEN];

                point[0] = POINT_CONVERSION_UNCOMPRESSED;
                memcpy(point + 1, b->raw + OFF_EC_X, EC_LEN);
                memrev(point + 1, EC_LEN);
                memcpy(point + 1 + EC_LEN, b->raw + OFF_EC_Y, EC_LEN);
                memrev(point + 1 + EC_LEN, EC_LEN);
                if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
                    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point) != 1)
                        return -ENOMEM;
                params = OSSL_PARAM_BLD_to_param(bld);
                ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
                if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
                    EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
                        return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                           "signature block EC key is not a P-256 point (%s)",
                                           ossl_reason(reason, sizeof reason));
                *ret = k;
                return 0;
        }
        case _SBV2_KEY_TYPE_MAX:
        case _SBV2_KEY_TYPE_INVALID:
                break;
        }
        return -EINVAL;
}

int sbv2_block_public_key(const Sbv2Block *b, EVP_PKEY **ret) {
        if (!b || !ret)
                return -EINVAL;
        return block_public_key(b, ret, NULL, 0);
}

static void hex_short(const uint8_t *d, char out[17]) {
        hex_encode(d, 8, out);
}

int sbv2_block_verify(const Sbv2Block *b, const uint8_t image_digest[SBV2_DIGEST_LEN], char *err, size_t errlen) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        uint8_t sig[RSA_LEN];
        size_t sig_len;
        int r;

        if (!b || !image_digest)
                return -EINVAL;
        if (memcmp(b->image_digest, image_digest, SBV2_DIGEST_LEN) != 0) {
                char want[17], have[17];
                hex_short(image_digest, want);
                hex_short(b->image_digest, have);
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "signature block signs digest %s…, but the image's SHA-256 is %s…", have, want);
        }
        r = block_public_key(b, &key, err, errlen);
        if (r < 0)
                return r;

        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (!ctx || EVP_PKEY_verify_init(ctx) != 1)
                return -EIO;
        if (b->type == SBV2_KEY_RSA3072) {
                if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1 ||
                    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1 ||
                    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) != 1)
                        return -EIO;
                memcpy(sig, b->raw + OFF_RSA_SIG, RSA_LEN);
                memrev(sig, RSA_LEN);
                r = EVP_PKEY_verify(ctx, sig, RSA_LEN, image_digest, SBV2_DIGEST_LEN);
        } else {
                _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *es = ECDSA_SIG_new();
                _cleanup_(BN_freep) BIGNUM *sr = NULL, *ss = NULL;
                _cleanup_free_ unsigned char *der = NULL;
                int der_len;

                sr = BN_lebin2bn(b->raw + OFF_EC_SIG, EC_LEN, NULL);
                ss = BN_lebin2bn(b->raw + OFF_EC_SIG + EC_LEN, EC_LEN, NULL);
                if (!es || !sr || !ss || ECDSA_SIG_set0(es, sr, ss) != 1)
                        return -ENOMEM;
                sr = ss = NULL;         /* owned by es now */
                der_len = i2d_ECDSA_SIG(es, &der);
                if (der_len <= 0)
                        return -EIO;
                sig_len = (size_t) der_len;
                r = EVP_PKEY_verify(ctx, der, sig_len, image_digest, SBV2_DIGEST_LEN);
        }
        ERR_clear_error();
        if (r != 1)
                return errf(err, errlen, -EBADMSG, "%s signature does not verify with the block's key",
                                   b->type == SBV2_KEY_RSA3072 ? "RSA-PSS" : "ECDSA");
        return 0;
}

int sbv2_parse_sector(const uint8_t *sector, size_t len, Sbv2Block ret[SBV2_MAX_BLOCKS], char *err, size_t errlen) {
        unsigned n = 0;
        char msg[200];
        int r;

        if (!sector || !ret)
                return -EINVAL;
        if (len < SBV2_SECTOR_SIZE)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "signature sector truncated (%zu of %u bytes)", len, SBV2_SECTOR_SIZE);
        for (; n < SBV2_MAX_BLOCKS; n++) {
                const uint8_t *raw = sector + n * SBV2_BLOCK_SIZE;
                if (raw[0] != SBV2_MAGIC)
                        break;
                r = sbv2_parse_block(raw, SBV2_BLOCK_SIZE, &ret[n], msg, sizeof msg);
                if (r < 0)
                        return errf(err, errlen, r, "signature block %u: %s", n, msg);
        }
        if (n == 0)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "no signature block (byte 0x%02x where the magic 0xE7 should be): image is not signed",
                                   sector[0]);
        return (int) n;
}

int sbv2_verify_sector(const uint8_t *sector, size_t len, const uint8_t image_digest[SBV2_DIGEST_LEN],
                       const uint8_t (*trusted)[SBV2_KEY_DIGEST_LEN], size_t n_trusted,
                       unsigned *ret_block, char *err, size_t errlen) {
        char msg[256] = "", keys[3 * 18] = "";
        int best = 0;

        if (!sector || !image_digest || (!trusted && n_trusted > 0))
                return -EINVAL;
        if (len < SBV2_SECTOR_SIZE)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "signature sector truncated (%zu of %u bytes)", len, SBV2_SECTOR_SIZE);
        if (n_trusted == 0)
                return errf(err, errlen, -ENOKEY, "no trusted secure boot key digest to verify against");

        /* Like the bootloader: any valid block whose key is trusted and whose
         * signature verifies is enough; a block that fails is skipped. */
        for (unsigned i = 0; i < SBV2_MAX_BLOCKS; i++) {
                const uint8_t *raw = sector + i * SBV2_BLOCK_SIZE;
                char m[200], h[17];
                bool is_trusted = false;
                Sbv2Block b;
                int r;

                if (raw[0] != SBV2_MAGIC)
                        break;
                r = sbv2_parse_block(raw, SBV2_BLOCK_SIZE, &b, m, sizeof m);
                if (r < 0) {
                        if (best == 0) {
                                best = r;
                                snprintf(msg, sizeof msg, "signature block %u: %s", i, m);
                        }
                        continue;
                }
                for (size_t t = 0; t < n_trusted && !is_trusted; t++)
                        is_trusted = memcmp(trusted[t], b.key_digest, SBV2_KEY_DIGEST_LEN) == 0;
                hex_short(b.key_digest, h);
                if (!is_trusted) {
                        size_t l = strlen(keys);
                        snprintf(keys + l, sizeof keys - l, "%s%s…", l ? ", " : "", h);
                        continue;
                }
                r = sbv2_block_verify(&b, image_digest, m, sizeof m);
                if (r >= 0) {
                        if (ret_block)
                                *ret_block = i;
                        return 0;
                }
                /* A trusted key that fails is the most telling reason. */
                best = r;
                snprintf(msg, sizeof msg, "signature block %u (trusted key %s…): %s", i, h, m);
        }
        if (best < 0)
                return errf(err, errlen, best, "%s", msg);
        if (keys[0])
                return errf(err, errlen, -ENOKEY, "no signature block carries a trusted key (block key digests: %s)",
                                   keys);
        return errf(err, errlen, -ESP_ERR_IMAGE_INVALID, "no signature block: image is not signed");
}

int sbv2_sector_first_key_digest(const uint8_t *sector, size_t len, uint8_t ret[SBV2_KEY_DIGEST_LEN],
                                 char *err, size_t errlen) {
        Sbv2Block b;
        char m[200];
        int r;

        if (!sector || !ret)
                return -EINVAL;
        if (len < SBV2_BLOCK_SIZE)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID, "signature sector truncated (%zu bytes)", len);
        r = sbv2_parse_block(sector, SBV2_BLOCK_SIZE, &b, m, sizeof m);
        if (r < 0)
                return errf(err, errlen, r, "first signature block: %s", m);
        memcpy(ret, b.key_digest, SBV2_KEY_DIGEST_LEN);
        return 0;
}

/* ---------------------------------------------------------------------- */
/* whole files                                                             */

bool sbv2_file_is_signed(const uint8_t *data, size_t len) {
        Sbv2Block blocks[SBV2_MAX_BLOCKS];

        if (!data || len < 2 * SBV2_SECTOR_SIZE || len % SBV2_SECTOR_SIZE != 0)
                return false;
        return sbv2_parse_sector(data + len - SBV2_SECTOR_SIZE, SBV2_SECTOR_SIZE, blocks, NULL, 0) > 0;
}

int sbv2_sign_file(EVP_PKEY *key, const uint8_t *data, size_t len, uint8_t **ret, size_t *ret_len,
                   char *err, size_t errlen) {
        _cleanup_free_ uint8_t *out = NULL;
        uint8_t digest[SBV2_DIGEST_LEN], *sector;
        size_t body_len, out_len;
        unsigned n_blocks = 0;
        char m[200];
        int r;

        if (!key || (!data && len > 0) || !ret || !ret_len)
                return -EINVAL;
        if (len == 0)
                return errf(err, errlen, -EINVAL, "nothing to sign: the input is empty");
        r = sbv2_key_type(key, m, sizeof m);
        if (r < 0)
                return errf(err, errlen, r, "%s", m);

        if (sbv2_file_is_signed(data, len)) {
                Sbv2Block blocks[SBV2_MAX_BLOCKS];

                /* espsecure --append-signatures: keep the data, add a block. */
                body_len = len - SBV2_SECTOR_SIZE;
                r = sbv2_parse_sector(data + body_len, SBV2_SECTOR_SIZE, blocks, m, sizeof m);
                if (r < 0)
                        return errf(err, errlen, r, "%s", m);
                n_blocks = (unsigned) r;
                if (n_blocks >= SBV2_MAX_BLOCKS)
                        return errf(err, errlen, -E2BIG, "already signed %u times: a sector holds at most %u blocks",
                                           n_blocks, SBV2_MAX_BLOCKS);
                r = sha256(data, body_len, digest);
                if (r < 0)
                        return r;
                for (unsigned i = 0; i < n_blocks; i++)
                        if (memcmp(blocks[i].image_digest, digest, SBV2_DIGEST_LEN) != 0)
                                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                                   "existing signature block %u signs different data: refusing to append",
                                                   i);
                out_len = len;
                out = malloc(out_len);
                if (!out)
                        return -ENOMEM;
                memcpy(out, data, len);
        } else {
                /* Pad with 0xFF to 4 KiB (erased flash), then a fresh sector. */
                body_len = ALIGN_TO(len, SBV2_SECTOR_SIZE);
                out_len = body_len + SBV2_SECTOR_SIZE;
                out = malloc(out_len);
                if (!out)
                        return -ENOMEM;
                memcpy(out, data, len);
                memset(out + len, 0xFF, out_len - len);
                r = sha256(out, body_len, digest);
                if (r < 0)
                        return r;
        }

        sector = out + body_len;
        r = sbv2_sign_digest(key, digest, sector + n_blocks * SBV2_BLOCK_SIZE);
        if (r < 0)
                return errf(err, errlen, r, "signing failed: %s", strerror(-r));
        log_debug("signed %zu bytes: block %u", body_len, n_blocks);
        *ret_len = out_len;
        *ret = TAKE_PTR(out);
        return 0;
}

int sbv2_verify_file(const uint8_t *data, size_t len, const uint8_t (*trusted)[SBV2_KEY_DIGEST_LEN],
                     size_t n_trusted, unsigned *ret_block, char *err, size_t errlen) {
        uint8_t digest[SBV2_DIGEST_LEN];
        int r;

        if (!data && len > 0)
                return -EINVAL;
        if (len < 2 * SBV2_SECTOR_SIZE || len % SBV2_SECTOR_SIZE != 0)
                return errf(err, errlen, -ESP_ERR_IMAGE_INVALID,
                                   "not a signed file: %zu bytes is not data plus a 4 KiB signature sector", len);
        r = sha256(data, len - SBV2_SECTOR_SIZE, digest);
        if (r < 0)
                return r;
        return sbv2_verify_sector(data + len - SBV2_SECTOR_SIZE, SBV2_SECTOR_SIZE, digest, trusted, n_trusted,
                                  ret_block, err, errlen);
}
