/* SPDX-License-Identifier: MIT */

#define LOG_TOPIC LOG_TOPIC_DSEMU

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "basic/esp-err.h"
#include "basic/log.h"
#include "basic/openssl-util.h"
#include "basic/secret-mem.h"
#include "dsemu/ds.h"

/* The plaintext box after the three operands (§1.3): MD(32) ‖ M′(4) ‖
 * length(4) ‖ β(8). */
#define DS_MD_LEN 32
#define DS_BOX_LEN 48
#define DS_PAD_BYTE 0x08
#define DS_PAD_LEN 8

/* The HMAC message the DS block uses to derive its AES key (§1.1). */
static const uint8_t ds_hmac_msg[32] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
};

size_t ds_c_len(EspChip chip) {
        return 3 * (ds_max_key_bits(chip) / 8) + DS_BOX_LEN;
}

unsigned ds_max_key_bits(EspChip chip) {
        switch (chip) {
        case ESP_CHIP_ESP32C3:
                return 3072;
        case ESP_CHIP_ESP32S3:
                return 4096;
        case _ESP_CHIP_MAX:
        case _ESP_CHIP_INVALID:
                break;
        }
        return 0;
}

/* Operand size L = MAX/8 for a C length (1200 -> 384, 1584 -> 512). */
static size_t operand_len(size_t c_len) {
        return (c_len - DS_BOX_LEN) / 3;
}

/* rsa_length values the chip takes: 31, 63, 95 (C3) and 127 (S3). */
static bool rsa_length_ok(uint32_t rsa_length, size_t c_len) {
        unsigned bits = (rsa_length + 1) * 32;

        if (rsa_length > 127)
                return false;
        return (bits == 1024 || bits == 2048 || bits == 3072 || bits == 4096) &&
                bits <= operand_len(c_len) * 8;
}

/* SHA-256 over Y ‖ M ‖ Rb ‖ M′ ‖ length ‖ IV (§1.3: note the order differs
 * from the plaintext, where MD comes before M′ and length). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static int sha256_md(const uint8_t *operands, size_t l, const uint8_t mprime_len[8],
                 const uint8_t iv[DS_IV_LEN], uint8_t md[DS_MD_LEN]) {
        SHA256_CTX sha;

        /* SHA256_* is deprecated in OpenSSL 3; EVP costs a fetch per call,
         * and this runs on every signature. */
        if (!SHA256_Init(&sha) ||
            !SHA256_Update(&sha, operands, 3 * l) ||
            !SHA256_Update(&sha, mprime_len, 8) ||
            !SHA256_Update(&sha, iv, DS_IV_LEN) ||
            !SHA256_Final(md, &sha))
                return -EIO;
        return 0;
}
#pragma GCC diagnostic pop

static int aes_cbc(bool enc, const uint8_t key[32], const uint8_t iv[DS_IV_LEN],
                   const uint8_t *in, size_t len, uint8_t *out) {
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        int n1 = 0, n2 = 0;

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (!EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv, enc ? 1 : 0) ||
            !EVP_CIPHER_CTX_set_padding(ctx, 0) ||
            !EVP_CipherUpdate(ctx, out, &n1, in, (int) len) ||
            !EVP_CipherFinal_ex(ctx, out + n1, &n2) ||
            (size_t) (n1 + n2) != len)
                return -EIO;
        return 0;
}

/* −M⁻¹ mod 2³² from the low word of M (Newton iteration on the inverse). */
static uint32_t mont_mprime(uint32_t m0) {
        uint32_t inv = m0;      /* correct to 3 bits for odd m0 */

        for (int i = 0; i < 5; i++)
                inv *= 2 - m0 * inv;
        return (uint32_t) -inv;
}

int ds_encrypt_params(EspChip chip, EVP_PKEY *key, const uint8_t hmac_key[32],
                      const uint8_t iv[DS_IV_LEN], DsData *ret) {
        _cleanup_(BN_clear_freep) BIGNUM *d = NULL;
        _cleanup_(BN_freep) BIGNUM *n = NULL, *rb = NULL;
        _cleanup_(BN_CTX_freep) BN_CTX *bnctx = NULL;
        uint8_t pt[DS_C_LEN_MAX], aes_key[32];
        unsigned mac_len = 0;
        size_t c_len, l;
        int bits, r;

        if (!key || !hmac_key || !iv || !ret || ds_max_key_bits(chip) == 0)
                return -EINVAL;
        if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
                return -EINVAL;
        bits = EVP_PKEY_get_bits(key);
        if (bits != 1024 && bits != 2048 && bits != 3072 && bits != 4096)
                return -EINVAL;
        if ((unsigned) bits > ds_max_key_bits(chip))
                return -EINVAL;
        if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) ||
            !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_D, &d))
                return -EINVAL;    /* not a private key */

        c_len = ds_c_len(chip);
        l = operand_len(c_len);

        /* Rb = R² mod M with R = 2^keybits (the actual size, not MAX). */
        bnctx = BN_CTX_new();
        rb = BN_new();
        if (!bnctx || !rb)
                return -ENOMEM;
        if (!BN_set_bit(rb, 2 * bits) || !BN_mod(rb, rb, n, bnctx))
                return -EIO;

        memset(pt, 0, sizeof(pt));
        if (BN_bn2lebinpad(d, pt, (int) l) < 0 ||
            BN_bn2lebinpad(n, pt + l, (int) l) < 0 ||
            BN_bn2lebinpad(rb, pt + 2 * l, (int) l) < 0) {
                r = -EIO;
                goto finish;
        }

        uint8_t *box = pt + 3 * l;
        le32_write(box + DS_MD_LEN, mont_mprime(le32_read(pt + l)));
        le32_write(box + DS_MD_LEN + 4, (uint32_t) bits / 32 - 1);
        memset(box + DS_MD_LEN + 8, DS_PAD_BYTE, DS_PAD_LEN);
        r = sha256_md(pt, l, box + DS_MD_LEN, iv, box);
        if (r < 0)
                goto finish;

        if (!HMAC(EVP_sha256(), hmac_key, 32, ds_hmac_msg, sizeof(ds_hmac_msg), aes_key, &mac_len) ||
            mac_len != 32) {
                r = -EIO;
                goto finish;
        }

        memset(ret, 0, sizeof(*ret));
        ret->rsa_length = (uint32_t) bits / 32 - 1;
        memcpy(ret->iv, iv, DS_IV_LEN);
        ret->c_len = c_len;
        r = aes_cbc(true, aes_key, iv, pt, c_len, ret->c);

finish:
        explicit_bzero(pt, sizeof(pt));
        explicit_bzero(aes_key, sizeof(aes_key));
        return r;
}

int ds_data_to_bytes(const DsData *d, uint8_t *out, size_t out_size, size_t *ret_len) {
        if (!d || !out || d->c_len > DS_C_LEN_MAX)
                return -EINVAL;
        if (out_size < DS_DATA_LEN(d->c_len))
                return -ENOBUFS;
        le32_write(out, d->rsa_length);
        memcpy(out + 4, d->iv, DS_IV_LEN);
        memcpy(out + 4 + DS_IV_LEN, d->c, d->c_len);
        if (ret_len)
                *ret_len = DS_DATA_LEN(d->c_len);
        return 0;
}

int ds_data_from_bytes(EspChip chip, const uint8_t *in, size_t len, DsData *ret) {
        size_t c_len = ds_c_len(chip);

        if (!in || !ret || ds_max_key_bits(chip) == 0)
                return -EINVAL;
        if (len != DS_DATA_LEN(c_len))
                return -EBADMSG;
        if (!rsa_length_ok(le32_read(in), c_len))
                return -EBADMSG;
        memset(ret, 0, sizeof(*ret));
        ret->rsa_length = le32_read(in);
        memcpy(ret->iv, in + 4, DS_IV_LEN);
        memcpy(ret->c, in + 4 + DS_IV_LEN, c_len);
        ret->c_len = c_len;
        return 0;
}

/* The decrypted, checked parameters. `pt` holds Y ‖ M ‖ Rb ‖ box. */
typedef struct DsPlain {
        uint8_t pt[DS_C_LEN_MAX];
        size_t l;               /* operand size (MAX/8) */
        size_t width;           /* key bytes, from the decrypted length field */
} DsPlain;

static void ds_plain_wipe(DsPlain *p) {
        explicit_bzero(p, sizeof(*p));
}

/* Steps 1–3 of §1.5 up to the exponentiation: HMAC downstream, AES-256-CBC
 * decrypt, MD check, padding check. Returns the §1.6 codes. */
static int ds_unseal(const Efuse *efuse, unsigned key_block, const DsData *data, size_t len, DsPlain *ret) {
        uint8_t aes_key[32], md[DS_MD_LEN];
        unsigned check = 0;
        uint32_t length;
        uint8_t *box;
        int r;

        if (!efuse || !data || key_block >= EFUSE_KEY_BLOCKS)
                return -ESP_ERR_INVALID_ARG;
        if (data->c_len != ds_c_len(efuse_chip(efuse)) || !rsa_length_ok(data->rsa_length, data->c_len))
                return -ESP_ERR_INVALID_ARG;
        if (len != (data->rsa_length + 1) * 4)
                return -ESP_ERR_INVALID_ARG;

        /* The HMAC peripheral checks the block's purpose first: a block that
         * is not HMAC_DOWN_DIGITAL_SIGNATURE/ALL, a blank one (purpose USER)
         * included, fails the HMAC configuration (§1.6: HMAC_FAIL). */
        r = efuse_hmac(efuse, key_block, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE,
                       ds_hmac_msg, sizeof(ds_hmac_msg), aes_key);
        if (r == -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL)
                return r;
        if (r < 0)
                return -ESP_ERR_HW_CRYPTO_DS_INVALID_KEY;

        ret->l = operand_len(data->c_len);
        r = aes_cbc(false, aes_key, data->iv, data->c, data->c_len, ret->pt);
        explicit_bzero(aes_key, sizeof(aes_key));
        if (r < 0)
                return r;

        box = ret->pt + 3 * ret->l;
        r = sha256_md(ret->pt, ret->l, box + DS_MD_LEN, data->iv, md);
        if (r < 0)
                return r;
        if (CRYPTO_memcmp(md, box, DS_MD_LEN) != 0)
                check |= 1;
        for (unsigned i = 0; i < DS_PAD_LEN; i++)
                if (box[DS_MD_LEN + 8 + i] != DS_PAD_BYTE)
                        check |= 2;
        /* QUERY_CHECK: 0 ok, 1 or 3 -> INVALID_DIGEST, 2 -> INVALID_PADDING. */
        if (check & 1)
                return -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST;
        if (check & 2)
                return -ESP_ERR_HW_CRYPTO_DS_INVALID_PADDING;

        /* The hardware takes the operand width from the decrypted length. */
        length = le32_read(box + DS_MD_LEN + 4);
        if (length != data->rsa_length)
                return -ESP_ERR_INVALID_ARG;
        ret->width = (length + 1) * 4;
        return 0;
}

/* Z = X^Y mod M on LE integers of `width` bytes. */
static int ds_modexp(const DsPlain *p, const uint8_t *x_le, uint8_t *z_le) {
        _cleanup_(BN_clear_freep) BIGNUM *y = NULL, *z = NULL;
        _cleanup_(BN_freep) BIGNUM *m = NULL, *x = NULL;
        _cleanup_(BN_CTX_freep) BN_CTX *bnctx = NULL;

        bnctx = BN_CTX_new();
        y = BN_lebin2bn(p->pt, (int) p->width, NULL);
        m = BN_lebin2bn(p->pt + p->l, (int) p->width, NULL);
        x = BN_lebin2bn(x_le, (int) p->width, NULL);
        z = BN_new();
        if (!bnctx || !y || !m || !x || !z)
                return -ENOMEM;
        BN_set_flags(y, BN_FLG_CONSTTIME);
        if (BN_is_zero(m) || !BN_is_odd(m))
                return -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST;
        if (!BN_mod_exp_mont_consttime(z, x, y, m, bnctx, NULL))
                return -EIO;
        if (BN_bn2lebinpad(z, z_le, (int) p->width) < 0)
                return -EIO;
        return 0;
}

int ds_sign(const Efuse *efuse, unsigned key_block, const DsData *data,
            const uint8_t *x_le, size_t len, uint8_t *z_le) {
        DsPlain p;
        int r;

        if (!x_le || !z_le || len == 0)
                return -ESP_ERR_INVALID_ARG;

        r = ds_unseal(efuse, key_block, data, len, &p);
        if (r >= 0)
                r = ds_modexp(&p, x_le, z_le);
        ds_plain_wipe(&p);
        if (r < 0)
                memset(z_le, 0, len);
        return r;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
int ds_params_fingerprint(const Efuse *efuse, unsigned key_block, const DsData *data,
                          uint8_t ret[DS_FINGERPRINT_LEN]) {
        SHA256_CTX sha;
        DsPlain p;
        int r;

        if (!data || !ret)
                return -ESP_ERR_INVALID_ARG;
        r = ds_unseal(efuse, key_block, data, (data->rsa_length + 1) * 4, &p);
        /* Y ‖ M ‖ Rb, then M' ‖ length, which follow the MD in the box. */
        if (r >= 0 && (!SHA256_Init(&sha) ||
                       !SHA256_Update(&sha, p.pt, 3 * p.l) ||
                       !SHA256_Update(&sha, p.pt + 3 * p.l + DS_MD_LEN, 8) ||
                       !SHA256_Final(ret, &sha)))
                r = -EIO;
        ds_plain_wipe(&p);
        explicit_bzero(&sha, sizeof sha);
        if (r < 0)
                memset(ret, 0, DS_FINGERPRINT_LEN);
        return r;
}
#pragma GCC diagnostic pop

/* ---- DsKey ---- */

struct DsKey {
        const Efuse *efuse;             /* not owned */
        unsigned key_block;
        DsData data;
        EVP_PKEY *pub;
        unsigned bits;

        /* CRT form of the key, recovered once from (n, e, d) and held only in
         * memory. It is used only after the peripheral path has unsealed and
         * checked C, and only when the MD of the unsealed parameters equals
         * `crt_md` (the parameters it was derived from). */
        uint8_t *crt;                   /* p, q, dp, dq, qinv: crt_w bytes each, big-endian (5 * crt_w) */
        size_t crt_w;
        BN_ULONG crt_e;                 /* the public exponent, for the check of each result */
        uint8_t crt_md[DS_MD_LEN];
};

DsKey *ds_key_free(DsKey *k) {
        if (!k)
                return NULL;
        if (k->crt)
                secret_free(k->crt, 5 * k->crt_w);
        EVP_PKEY_free(k->pub);
        explicit_bzero(k, sizeof(*k));
        free(k);
        return NULL;
}

unsigned ds_key_bits(const DsKey *k) {
        return k ? k->bits : 0;
}

EVP_PKEY *ds_key_public(const DsKey *k) {
        return k ? k->pub : NULL;
}

bool ds_key_has_crt(const DsKey *k) {
        return k && k->crt;
}

/* ⌊√a⌋ by Newton's iteration from a start above the root: the sequence
 * falls monotonically until it reaches the floor of the root. */
static int bn_isqrt(BIGNUM *r, const BIGNUM *a, BN_CTX *ctx) {
        BIGNUM *x, *y;
        int ok = 0;

        if (BN_is_zero(a)) {
                BN_zero(r);
                return 0;
        }
        BN_CTX_start(ctx);
        x = BN_CTX_get(ctx);
        y = BN_CTX_get(ctx);
        if (!y || !BN_set_bit(x, (BN_num_bits(a) + 1) / 2 + 1))
                goto out;
        for (;;) {
                if (!BN_div(y, NULL, a, x, ctx) || !BN_add(y, y, x) || !BN_rshift1(y, y))
                        goto out;
                if (BN_cmp(y, x) >= 0)
                        break;
                if (!BN_copy(x, y))
                        goto out;
        }
        ok = BN_copy(r, x) != NULL;
out:
        BN_CTX_end(ctx);
        return ok ? 0 : -EIO;
}

/* Finds p from (n, e, d) with no modular exponentiation, for the small e of
 * every real key: d·e − 1 = k·λ(n) and λ = φ/g with g = gcd(p−1, q−1), so
 * for the right small g, K = (d·e − 1)·g/φ is an integer below e·g. As
 * φ = n − (p+q) + 1 is just below n, K = ⌊(d·e − 1)·g / n⌋ + 1; then
 * p + q = n − φ + 1 and p, q are the roots of x² − (p+q)·x + n. Tries
 * g = 1 … RSA_FACTOR_MAX_G; -ESRCH when none fits (the caller falls back
 * to rsa_recover_factor()). */
#define RSA_FACTOR_MAX_G 4096
static int rsa_factor_small_e(const BIGNUM *n, const BIGNUM *e, const BIGNUM *d, BN_CTX *ctx, BIGNUM *ret_p) {
        BIGNUM *de1, *x, *k, *phi, *rem, *sum, *disc, *root, *q, *t;
        int r = -ESRCH;

        if (BN_num_bits(e) > 32)
                return -ESRCH;
        BN_CTX_start(ctx);
        de1 = BN_CTX_get(ctx);
        x = BN_CTX_get(ctx);
        k = BN_CTX_get(ctx);
        phi = BN_CTX_get(ctx);
        rem = BN_CTX_get(ctx);
        sum = BN_CTX_get(ctx);
        disc = BN_CTX_get(ctx);
        root = BN_CTX_get(ctx);
        q = BN_CTX_get(ctx);
        t = BN_CTX_get(ctx);
        if (!t || !BN_mul(de1, d, e, ctx) || !BN_sub_word(de1, 1)) {
                r = -EIO;
                goto out;
        }
        for (unsigned g = 1; g <= RSA_FACTOR_MAX_G; g++) {
                if (!BN_copy(x, de1) || !BN_mul_word(x, g) ||
                    !BN_div(k, NULL, x, n, ctx) || !BN_add_word(k, 1) ||
                    !BN_div(phi, rem, x, k, ctx)) {
                        r = -EIO;
                        goto out;
                }
                if (!BN_is_zero(rem) || BN_cmp(phi, n) >= 0)
                        continue;
                /* sum = n − φ + 1, disc = sum² − 4n */
                if (!BN_sub(sum, n, phi) || !BN_add_word(sum, 1) ||
                    !BN_sqr(disc, sum, ctx) || !BN_lshift(t, n, 2) || !BN_sub(disc, disc, t)) {
                        r = -EIO;
                        goto out;
                }
                if (BN_is_negative(disc))
                        continue;
                if (bn_isqrt(root, disc, ctx) < 0 || !BN_sqr(t, root, ctx)) {
                        r = -EIO;
                        goto out;
                }
                if (BN_cmp(t, disc) != 0)
                        continue;
                /* p = (sum + root)/2, q = (sum − root)/2, and p·q must be n */
                if (!BN_add(t, sum, root) || BN_is_odd(t) || !BN_rshift1(ret_p, t) ||
                    !BN_sub(t, sum, root) || !BN_rshift1(q, t) || !BN_mul(t, ret_p, q, ctx))
                        continue;
                if (BN_cmp(t, n) == 0 && !BN_is_one(q)) {
                        r = 0;
                        goto out;
                }
        }
out:
        BN_CTX_end(ctx);
        return r;
}

/* Finds p from (n, e, d): k = d·e − 1 = 2^t·r with r odd; for a base g,
 * the sequence g^r, g^2r, … mod n reaches 1, and the element just before a
 * first 1 that is not ±1 is a non-trivial square root of 1, whose gcd with n
 * is a factor. At least half of all bases work. */
static int rsa_recover_factor(const BIGNUM *n, const BIGNUM *e, const BIGNUM *d, BN_CTX *ctx, BIGNUM *ret_p) {
        _cleanup_(BN_clear_freep) BIGNUM *k = NULL, *r = NULL, *x = NULL, *y = NULL, *g = NULL;
        _cleanup_(BN_freep) BIGNUM *nm1 = NULL;
        int t = 0;

        k = BN_new();
        r = BN_new();
        x = BN_new();
        y = BN_new();
        g = BN_new();
        nm1 = BN_dup(n);
        if (!k || !r || !x || !y || !g || !nm1)
                return -ENOMEM;
        if (!BN_sub_word(nm1, 1) || !BN_mul(k, d, e, ctx) || !BN_sub_word(k, 1) || !BN_copy(r, k))
                return -EIO;
        if (BN_is_zero(k) || BN_is_odd(k))
                return -EINVAL;
        while (!BN_is_odd(r)) {
                if (!BN_rshift1(r, r))
                        return -EIO;
                t++;
        }

        for (int attempt = 0; attempt < 128; attempt++) {
                if (!BN_rand_range(g, nm1))
                        return -EIO;
                if (BN_cmp(g, BN_value_one()) <= 0)
                        continue;
                if (!BN_mod_exp(x, g, r, n, ctx))
                        return -EIO;
                if (BN_is_one(x) || BN_cmp(x, nm1) == 0)
                        continue;
                for (int i = 0; i < t; i++) {
                        if (!BN_mod_sqr(y, x, n, ctx))
                                return -EIO;
                        if (BN_is_one(y)) {
                                /* x is a non-trivial root of 1: gcd(x − 1, n) splits n. */
                                if (!BN_sub_word(x, 1) || !BN_gcd(ret_p, x, n, ctx))
                                        return -EIO;
                                if (BN_is_one(ret_p) || BN_cmp(ret_p, n) == 0)
                                        break;
                                return 0;
                        }
                        if (BN_cmp(y, nm1) == 0)
                                break;
                        if (!BN_copy(x, y))
                                return -EIO;
                }
        }
        return -EINVAL;    /* d does not belong to (n, e) */
}

/* Builds the CRT private key for (n, e, d) from the unsealed parameters. */
static int ds_key_build_crt(DsKey *k, const DsPlain *p) {
        _cleanup_(BN_clear_freep) BIGNUM *d = NULL, *fp = NULL, *fq = NULL, *dp = NULL, *dq = NULL,
                *qinv = NULL, *tmp = NULL;
        _cleanup_(BN_freep) BIGNUM *n = NULL, *e = NULL, *pub_n = NULL;
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = NULL;
        int r;

        ctx = BN_CTX_new();
        d = BN_lebin2bn(p->pt, (int) p->width, NULL);
        n = BN_lebin2bn(p->pt + p->l, (int) p->width, NULL);
        fp = BN_new();
        fq = BN_new();
        dp = BN_new();
        dq = BN_new();
        tmp = BN_new();
        if (!ctx || !d || !n || !fp || !fq || !dp || !dq || !tmp)
                return -ENOMEM;
        if (!EVP_PKEY_get_bn_param(k->pub, OSSL_PKEY_PARAM_RSA_N, &pub_n) ||
            !EVP_PKEY_get_bn_param(k->pub, OSSL_PKEY_PARAM_RSA_E, &e))
                return -EINVAL;
        if (BN_cmp(pub_n, n) != 0)
                return -EKEYREJECTED;

        r = rsa_factor_small_e(n, e, d, ctx, fp);
        if (r == -ESRCH)
                r = rsa_recover_factor(n, e, d, ctx, fp);
        if (r < 0)
                return r;
        if (!BN_div(fq, tmp, n, fp, ctx) || !BN_is_zero(tmp))
                return -EINVAL;
        /* OpenSSL wants p > q for its qInv convention; either order works,
         * but keep the usual one. */
        if (BN_cmp(fp, fq) < 0)
                BN_swap(fp, fq);

        if (!BN_copy(tmp, fp) || !BN_sub_word(tmp, 1) || !BN_mod(dp, d, tmp, ctx) ||
            !BN_copy(tmp, fq) || !BN_sub_word(tmp, 1) || !BN_mod(dq, d, tmp, ctx))
                return -EIO;
        qinv = BN_mod_inverse(NULL, fq, fp, ctx);
        if (!qinv)
                return -EINVAL;

        /* Kept compactly, not as an EVP_PKEY: an RSA key object with its
         * Montgomery and blinding caches costs ~6 KB per device, these
         * five numbers 2.5 bytes per key bit. */
        size_t w = (size_t) (BN_num_bytes(n) + 1) / 2;
        if (BN_num_bytes(fp) > (int) w || BN_num_bytes(fq) > (int) w || BN_get_word(e) == (BN_ULONG) -1)
                return -EINVAL;
        uint8_t *blob = secret_alloc0(5 * w);   /* out of core dumps */
        if (!blob)
                return -ENOMEM;
        const BIGNUM *parts[5] = { fp, fq, dp, dq, qinv };
        for (size_t i = 0; i < 5; i++)
                if (BN_bn2binpad(parts[i], blob + i * w, (int) w) != (int) w) {
                        secret_free(blob, 5 * w);
                        return -EINVAL;
                }
        if (k->crt)
                secret_free(k->crt, 5 * k->crt_w);
        k->crt = blob;
        k->crt_w = w;
        k->crt_e = BN_get_word(e);
        memcpy(k->crt_md, p->pt + 3 * p->l, DS_MD_LEN);
        return 0;
}

int ds_key_new(const Efuse *efuse, unsigned key_block, const DsData *data, EVP_PKEY *pub, DsKey **ret) {
        _cleanup_(ds_key_freep) DsKey *k = NULL;
        DsPlain p;
        int r;

        if (!efuse || !data || !pub || !ret || key_block >= EFUSE_KEY_BLOCKS)
                return -EINVAL;
        if (EVP_PKEY_get_base_id(pub) != EVP_PKEY_RSA)
                return -EINVAL;
        if (data->c_len != ds_c_len(efuse_chip(efuse)) || !rsa_length_ok(data->rsa_length, data->c_len))
                return -EINVAL;
        if ((unsigned) EVP_PKEY_get_bits(pub) != (data->rsa_length + 1) * 32)
                return -EINVAL;

        k = calloc(1, sizeof(*k));
        if (!k)
                return -ENOMEM;
        k->efuse = efuse;
        k->key_block = key_block;
        k->data = *data;
        k->bits = (data->rsa_length + 1) * 32;
        if (!EVP_PKEY_up_ref(pub))
                return -EIO;
        k->pub = pub;

        /* Peripheral errors (wrong key, tampered C) are not fatal here: the
         * key simply gets no fast path and each signature reports them. A
         * modulus that is not the certificate's is a provisioning error. */
        r = ds_unseal(efuse, key_block, data, k->bits / 8, &p);
        if (r >= 0) {
                r = ds_key_build_crt(k, &p);
                if (r == -EKEYREJECTED) {
                        ds_plain_wipe(&p);
                        return r;
                }
                if (r < 0)
                        log_debug("no CRT form for the DS key (%s), signing with the plain exponent",
                                  esp_err_to_name(r));
        }
        ds_plain_wipe(&p);

        *ret = TAKE_PTR(k);
        return 0;
}

/* X^d mod n by the CRT, from the compact form. -ERANGE when X >= n (the
 * caller's plain path reduces X, as the hardware does); the result is
 * checked against X with the public exponent before it is used. */
static int crt_sign(const DsKey *k, const uint8_t *in_be, size_t len, uint8_t *out_be) {
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(BN_clear_freep) BIGNUM *p = NULL, *q = NULL, *dp = NULL, *dq = NULL, *qinv = NULL,
                *m1 = NULL, *m2 = NULL, *h = NULL;
        _cleanup_(BN_freep) BIGNUM *x = NULL, *n = NULL, *chk = NULL, *e = NULL;
        size_t w = k->crt_w;

        if (!ctx)
                return -ENOMEM;
        p = BN_bin2bn(k->crt, (int) w, NULL);
        q = BN_bin2bn(k->crt + w, (int) w, NULL);
        dp = BN_bin2bn(k->crt + 2 * w, (int) w, NULL);
        dq = BN_bin2bn(k->crt + 3 * w, (int) w, NULL);
        qinv = BN_bin2bn(k->crt + 4 * w, (int) w, NULL);
        x = BN_bin2bn(in_be, (int) len, NULL);
        n = BN_new();
        m1 = BN_new();
        m2 = BN_new();
        h = BN_new();
        chk = BN_new();
        e = BN_new();
        if (!p || !q || !dp || !dq || !qinv || !x || !n || !m1 || !m2 || !h || !chk || !e)
                return -ENOMEM;
        BN_set_flags(p, BN_FLG_CONSTTIME);
        BN_set_flags(q, BN_FLG_CONSTTIME);
        BN_set_flags(dp, BN_FLG_CONSTTIME);
        BN_set_flags(dq, BN_FLG_CONSTTIME);
        if (!BN_mul(n, p, q, ctx) || !BN_set_word(e, k->crt_e))
                return -EIO;
        if (BN_cmp(x, n) >= 0)
                return -ERANGE;
        /* m1 = x^dp mod p, m2 = x^dq mod q, h = qinv (m1 - m2) mod p, s = m2 + h q */
        /* both halves in one call: OpenSSL runs them side by side (AVX-512
         * IFMA for 1024-bit primes), as its own RSA does */
        if (!BN_mod(h, x, p, ctx) || !BN_mod(chk, x, q, ctx) ||
            !BN_mod_exp_mont_consttime_x2(m1, h, dp, p, NULL, m2, chk, dq, q, NULL, ctx) ||
            !BN_mod_sub(h, m1, m2, p, ctx) || !BN_mod_mul(h, h, qinv, p, ctx) ||
            !BN_mul(h, h, q, ctx) || !BN_add(m1, m2, h))
                return -EIO;
        if (!BN_mod_exp(chk, m1, e, n, ctx) || BN_cmp(chk, x) != 0)
                return -EIO; /* never hand out a faulty signature: the plain path decides */
        if (BN_bn2binpad(m1, out_be, (int) len) != (int) len)
                return -EIO;
        return 0;
}

int ds_key_sign_raw(DsKey *k, const uint8_t *in_be, size_t len, uint8_t *out_be) {
        uint8_t x_le[DS_C_LEN_MAX / 3], z_le[DS_C_LEN_MAX / 3];
        DsPlain p;
        int r;

        if (!k || !in_be || !out_be || len != k->bits / 8)
                return -ESP_ERR_INVALID_ARG;

        /* Every call goes through HMAC, AES, MD and padding checks. */
        r = ds_unseal(k->efuse, k->key_block, &k->data, len, &p);
        if (r < 0)
                goto fail;

        if (k->crt && CRYPTO_memcmp(k->crt_md, p.pt + 3 * p.l, DS_MD_LEN) == 0) {
                /* X >= M makes OpenSSL refuse; fall through to the plain path,
                 * which reduces X like the hardware. */
                r = crt_sign(k, in_be, len, out_be);
                if (r >= 0) {
                        ds_plain_wipe(&p);
                        return 0;
                }
        }

        memcpy(x_le, in_be, len);
        memrev(x_le, len);
        r = ds_modexp(&p, x_le, z_le);
        if (r < 0)
                goto fail;
        memcpy(out_be, z_le, len);
        memrev(out_be, len);
        ds_plain_wipe(&p);
        explicit_bzero(z_le, sizeof(z_le));
        return 0;

fail:
        ds_plain_wipe(&p);
        memset(out_be, 0, len);
        return r;
}
