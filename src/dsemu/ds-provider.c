/* SPDX-License-Identifier: MIT */

/* The "espds" OpenSSL 3 provider (see ds-provider.h and docs/ds-provider.md).
 *
 * Two operations, both named RSA, both here on purpose: a key management
 * whose key object is an opaque handle on a DsKey plus the public (n, e),
 * and a signature operation that builds the EMSA-PKCS1-v1_5 or EMSA-PSS
 * encoding (RFC 8017 §9.1, §9.2) and hands it to the DS for Z = X^Y mod M,
 * as ESP-IDF's mbedTLS port does with esp_ds_sign (esp-formats.md §1.5).
 * Digests come from the default provider through a child library context
 * that never fetches from us. */

#include <pthread.h>
#include <time.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "basic/esp-err.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "basic/parse-util.h"
#include "dsemu/ds-provider.h"

#define DS_PROV_PROPS "provider=" DS_PROVIDER_NAME
#define DS_PROV_CHILD_PROPQ "provider!=" DS_PROVIDER_NAME
#define DS_PROV_RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
/* The import parameter that carries the DsKey pointer (in-process only). */
#define DS_PROV_PARAM_KEY "espds-key"

/* Salt length sentinels of OpenSSL's RSA-PSS (RSA_PSS_SALTLEN_*); 3.0's
 * headers lack the last one, which 3.1 added. */
#define SALTLEN_DIGEST (-1)
#define SALTLEN_AUTO (-2)
#define SALTLEN_MAX (-3)
#define SALTLEN_AUTO_DIGEST_MAX (-4)

typedef struct DsProvCtx {
        const OSSL_CORE_HANDLE *handle;
        OSSL_LIB_CTX *libctx;           /* child of the application's context, never fetches from us */
} DsProvCtx;

typedef struct DsProvKey {
        DsProvCtx *prov;                /* not owned */
        DsKey *ds;                      /* not owned; NULL for a public-only key */
        BIGNUM *n;
        BIGNUM *e;
        unsigned bits;
} DsProvKey;

typedef struct DsSigCtx {
        DsProvCtx *prov;                /* not owned */
        char *propq;
        DsProvKey *key;                 /* not owned: the EVP_PKEY holds it */
        int pad;                        /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
        EVP_MD *md;                     /* NULL until set (PKCS#1 then signs raw data) */
        EVP_MD *mgf1_md;                /* NULL: same as md */
        int saltlen;                    /* >= 0 or SALTLEN_* */
        EVP_MD_CTX *mdctx;              /* digest-sign in progress */
} DsSigCtx;

/* ---- errors ---- */

static pthread_once_t err_once = PTHREAD_ONCE_INIT;
static int err_lib;

/* ERR_load_strings() ORs the library code into these, so not const. It
 * stops at the first zero code, so the library name entry gets its code in
 * err_init(). */
static ERR_STRING_DATA err_strings[] = {
        { 1, "espds provider" },
        { ERR_PACK(0, 0, ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL), "ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL" },
        { ERR_PACK(0, 0, ESP_ERR_HW_CRYPTO_DS_INVALID_KEY), "ESP_ERR_HW_CRYPTO_DS_INVALID_KEY" },
        { ERR_PACK(0, 0, ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST), "ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST" },
        { ERR_PACK(0, 0, ESP_ERR_HW_CRYPTO_DS_INVALID_PADDING), "ESP_ERR_HW_CRYPTO_DS_INVALID_PADDING" },
        { ERR_PACK(0, 0, ESP_ERR_INVALID_ARG), "ESP_ERR_INVALID_ARG" },
        { ERR_PACK(0, 0, EINVAL), "invalid argument" },
        { ERR_PACK(0, 0, ENOMEM), "out of memory" },
        { ERR_PACK(0, 0, EIO), "OpenSSL failure" },
        { ERR_PACK(0, 0, ENOKEY), "no DS private key" },
        { ERR_PACK(0, 0, EPERM), "private key of a DS key cannot be exported" },
        { ERR_PACK(0, 0, EOPNOTSUPP), "not supported" },
        { ERR_PACK(0, 0, ENOBUFS), "buffer too small" },
        {}
};

static void err_init(void) {
        err_lib = ERR_get_next_error_library();
        err_strings[0].error = ERR_PACK(err_lib, 0, 0);
        ERR_load_strings(err_lib, err_strings);
}

/* Put `r` (negative errno or -ESP_ERR_*) onto the error queue, returns 0
 * (the provider "failure" value) so callers can `return ds_raise(...)`. */
_printf_(2, 3)
static int ds_raise(int r, const char *fmt, ...) {
        va_list ap;

        (void) pthread_once(&err_once, err_init);
        ERR_new();
        ERR_set_debug(OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC);
        va_start(ap, fmt);
        ERR_vset_error(err_lib, r < 0 ? -r : r, fmt, ap);
        va_end(ap);
        return 0;
}

int ds_provider_pop_error(void) {
        unsigned long e;
        int r = 0;

        (void) pthread_once(&err_once, err_init);
        while ((e = ERR_get_error()) != 0)
                if (!ERR_SYSTEM_ERROR(e) && ERR_GET_LIB(e) == err_lib)
                        r = -ERR_GET_REASON(e);
        return r;
}

/* ---- key management ---- */

static unsigned rsa_security_bits(unsigned bits) {
        /* NIST SP 800-57 part 1, table 2 (what BN_security_bits() returns). */
        if (bits >= 15360)
                return 256;
        if (bits >= 7680)
                return 192;
        if (bits >= 3072)
                return 128;
        if (bits >= 2048)
                return 112;
        if (bits >= 1024)
                return 80;
        return 0;
}

static void *ds_km_new(void *provctx) {
        DsProvKey *k = calloc(1, sizeof(DsProvKey));

        if (!k) {
                ds_raise(-ENOMEM, "key object");
                return NULL;
        }
        k->prov = provctx;
        return k;
}

static void ds_km_free(void *keydata) {
        DsProvKey *k = keydata;

        if (!k)
                return;
        BN_free(k->n);
        BN_free(k->e);
        free(k);
}

static int ds_km_set_public(DsProvKey *k, BIGNUM *n, BIGNUM *e) {
        if (BN_is_zero(n) || BN_is_negative(n) || !BN_is_odd(n) || BN_is_zero(e) || BN_is_negative(e)) {
                BN_free(n);
                BN_free(e);
                return ds_raise(-EINVAL, "bad RSA public key");
        }
        BN_free(k->n);
        BN_free(k->e);
        k->n = n;
        k->e = e;
        k->bits = (unsigned) BN_num_bits(n);
        return 1;
}

static void *ds_km_dup(const void *keydata, int selection) {
        const DsProvKey *k = keydata;
        DsProvKey *d;

        d = ds_km_new(k->prov);
        if (!d)
                return NULL;
        if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
                d->ds = k->ds;
        if (k->n) {
                d->n = BN_dup(k->n);
                d->e = BN_dup(k->e);
                if (!d->n || !d->e) {
                        ds_km_free(d);
                        ds_raise(-ENOMEM, "key copy");
                        return NULL;
                }
                d->bits = k->bits;
        }
        return d;
}

static int ds_km_has(const void *keydata, int selection) {
        const DsProvKey *k = keydata;

        if (!k)
                return 0;
        if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && !k->n)
                return 0;
        if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->ds)
                return 0;
        return 1;
}

static int ds_km_match(const void *keydata1, const void *keydata2, int selection) {
        const DsProvKey *a = keydata1, *b = keydata2;

        if (!(selection & OSSL_KEYMGMT_SELECT_KEYPAIR))
                return 1;       /* RSA has no domain parameters */
        /* The private half is the DS's; the modulus identifies it. */
        if (!a->n || !b->n)
                return 0;
        return BN_cmp(a->n, b->n) == 0 && BN_cmp(a->e, b->e) == 0;
}

static int ds_km_import(void *keydata, int selection, const OSSL_PARAM params[]) {
        DsProvKey *k = keydata;
        const OSSL_PARAM *p;
        BIGNUM *n = NULL, *e = NULL;

        if (!k)
                return ds_raise(-EINVAL, "no key object");

        p = OSSL_PARAM_locate_const(params, DS_PROV_PARAM_KEY);
        if (p) {
                const void *ptr;
                size_t len;
                DsKey *ds;
                EVP_PKEY *pub;

                if (!(selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
                        return ds_raise(-EINVAL, "a DS key handle needs the private key selection");
                if (!OSSL_PARAM_get_octet_string_ptr(p, &ptr, &len) || len != sizeof(DsKey *))
                        return ds_raise(-EINVAL, "bad " DS_PROV_PARAM_KEY " parameter");
                memcpy(&ds, ptr, sizeof(ds));
                pub = ds ? ds_key_public(ds) : NULL;
                if (!pub)
                        return ds_raise(-EINVAL, "DS key without a public key");
                if (!EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) ||
                    !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &e)) {
                        BN_free(n);
                        return ds_raise(-EINVAL, "public key of the DS key is not RSA");
                }
                if (!ds_km_set_public(k, n, e))
                        return 0;
                if ((unsigned) BN_num_bits(k->n) != ds_key_bits(ds))
                        return ds_raise(-EINVAL, "public key has %u bits, DS key %u",
                                        (unsigned) BN_num_bits(k->n), ds_key_bits(ds));
                k->ds = ds;
                return 1;
        }

        /* Real private material never enters this provider: refusing it also
         * makes OpenSSL keep a software key with its own provider instead of
         * moving it here. */
        if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D))
                return 0;
        if (!(selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY))
                return 0;
        p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_N);
        if (!p || !OSSL_PARAM_get_BN(p, &n))
                return 0;
        p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_E);
        if (!p || !OSSL_PARAM_get_BN(p, &e)) {
                BN_free(n);
                return 0;
        }
        return ds_km_set_public(k, n, e);
}

static const OSSL_PARAM ds_km_import_table[] = {
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_octet_string(DS_PROV_PARAM_KEY, NULL, 0),
        OSSL_PARAM_END
};

static const OSSL_PARAM ds_km_export_table[] = {
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_END
};

static const OSSL_PARAM *ds_km_import_types(int selection) {
        return ds_km_import_table;
}

static const OSSL_PARAM *ds_km_export_types(int selection) {
        return ds_km_export_table;
}

static int ds_km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg) {
        DsProvKey *k = keydata;
        _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
        _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;

        if (!k)
                return 0;
        /* The whole point: the private half stays in the DS. */
        if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && k->ds)
                return ds_raise(-EPERM, "export of an espds private key refused");

        bld = OSSL_PARAM_BLD_new();
        if (!bld)
                return ds_raise(-ENOMEM, "export");
        if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && k->n)
                if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, k->n) ||
                    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, k->e))
                        return ds_raise(-ENOMEM, "export");
        params = OSSL_PARAM_BLD_to_param(bld);
        if (!params)
                return ds_raise(-ENOMEM, "export");
        return cb(params, cbarg);
}

static int ds_km_get_params(void *keydata, OSSL_PARAM params[]) {
        DsProvKey *k = keydata;
        OSSL_PARAM *p;

        if (!k || !k->n)
                return ds_raise(-EINVAL, "empty key object");

        p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS);
        if (p && !OSSL_PARAM_set_int(p, (int) k->bits))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS);
        if (p && !OSSL_PARAM_set_int(p, (int) rsa_security_bits(k->bits)))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE);
        if (p && !OSSL_PARAM_set_int(p, (int) ((k->bits + 7) / 8)))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST);
        if (p && !OSSL_PARAM_set_utf8_string(p, "SHA256"))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_N);
        if (p && !OSSL_PARAM_set_BN(p, k->n))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_E);
        if (p && !OSSL_PARAM_set_BN(p, k->e))
                return 0;
        return 1;
}

static const OSSL_PARAM ds_km_gettable_table[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_END
};

static const OSSL_PARAM *ds_km_gettable_params(void *provctx) {
        return ds_km_gettable_table;
}

static const char *ds_km_query_operation_name(int operation_id) {
        return operation_id == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

static const OSSL_DISPATCH ds_keymgmt_functions[] = {
        { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void)) ds_km_new },
        { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void)) ds_km_free },
        { OSSL_FUNC_KEYMGMT_DUP, (void (*)(void)) ds_km_dup },
        { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void)) ds_km_has },
        { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void)) ds_km_match },
        { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void)) ds_km_import },
        { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void)) ds_km_import_types },
        { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void)) ds_km_export },
        { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void)) ds_km_export_types },
        { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void)) ds_km_get_params },
        { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void)) ds_km_gettable_params },
        { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void)) ds_km_query_operation_name },
        {}
};

/* ---- EMSA encodings (RFC 8017) ---- */

/* DER of DigestInfo up to the hash (RFC 8017 §9.2, note 1). */
typedef struct DigestInfoPrefix {
        int nid;
        uint8_t len;
        uint8_t der[19];
} DigestInfoPrefix;

static const DigestInfoPrefix digest_info_prefixes[] = {
        { NID_sha1, 15, { 0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14 } },
        { NID_sha224, 19, { 0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c } },
        { NID_sha256, 19, { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 } },
        { NID_sha384, 19, { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 } },
        { NID_sha512, 19, { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 } },
};

/* AlgorithmIdentifier of shaXWithRSAEncryption (RFC 8017 appendix A.2.4),
 * parameters NULL: 1.2.840.113549.1.1.<last>. */
typedef struct PkcsAlgorithmId {
        int nid;
        uint8_t last;
} PkcsAlgorithmId;

static const PkcsAlgorithmId pkcs1_algorithm_ids[] = {
        { NID_sha1, 5 },
        { NID_sha224, 14 },
        { NID_sha256, 11 },
        { NID_sha384, 12 },
        { NID_sha512, 13 },
};

static const DigestInfoPrefix *digest_info_find(int nid) {
        for (size_t i = 0; i < ELEMENTSOF(digest_info_prefixes); i++)
                if (digest_info_prefixes[i].nid == nid)
                        return &digest_info_prefixes[i];
        return NULL;
}

/* EMSA-PKCS1-v1_5 (§9.2): 00 01 FF…FF 00 T, T = DigestInfo ‖ H, or T = the
 * data itself when no digest is set (RSA_PKCS1_PADDING over raw input, as
 * OpenSSL does). */
static int emsa_pkcs1_encode(const EVP_MD *md, const uint8_t *h, size_t hlen, uint8_t *em, size_t k) {
        const DigestInfoPrefix *di = NULL;
        size_t tlen = hlen;

        if (md) {
                di = digest_info_find(EVP_MD_get_type(md));
                if (!di)
                        return ds_raise(-EOPNOTSUPP, "no PKCS#1 v1.5 DigestInfo for %s", EVP_MD_get0_name(md));
                if (hlen != (size_t) EVP_MD_get_size(md))
                        return ds_raise(-EINVAL, "digest is %zu bytes, %s has %d", hlen,
                                        EVP_MD_get0_name(md), EVP_MD_get_size(md));
                tlen += di->len;
        }
        if (k < tlen + 11)
                return ds_raise(-EINVAL, "message too long for the key");

        em[0] = 0x00;
        em[1] = 0x01;
        memset(em + 2, 0xff, k - tlen - 3);
        em[k - tlen - 1] = 0x00;
        if (di)
                memcpy(em + k - tlen, di->der, di->len);
        memcpy(em + k - hlen, h, hlen);
        return 1;
}

/* MGF1 (§B.2.1), XORed straight into `out`. */
static int mgf1_xor(const EVP_MD *md, const uint8_t *seed, size_t seedlen, uint8_t *out, size_t len) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        uint8_t buf[EVP_MAX_MD_SIZE];
        unsigned hlen;

        if (!c)
                return ds_raise(-ENOMEM, "MGF1");
        for (uint32_t counter = 0; len > 0; counter++) {
                uint8_t cnt[4] = { counter >> 24, counter >> 16, counter >> 8, counter };
                size_t n;

                if (!EVP_DigestInit_ex2(c, md, NULL) ||
                    !EVP_DigestUpdate(c, seed, seedlen) ||
                    !EVP_DigestUpdate(c, cnt, sizeof(cnt)) ||
                    !EVP_DigestFinal_ex(c, buf, &hlen))
                        return ds_raise(-EIO, "MGF1 digest");
                n = MIN(len, (size_t) hlen);
                for (size_t i = 0; i < n; i++)
                        out[i] ^= buf[i];
                out += n;
                len -= n;
        }
        return 1;
}

/* EMSA-PSS-ENCODE (§9.1.1) with emBits = modBits - 1, written into the k
 * bytes of the RSA input (a leading zero byte when emLen < k). */
static int emsa_pss_encode(DsSigCtx *c, const uint8_t *mhash, size_t mhashlen, uint8_t *out, size_t k) {
        static const uint8_t zeros[8] = {};
        const EVP_MD *mgf = c->mgf1_md ?: c->md;
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *h = NULL;
        size_t embits = c->key->bits - 1, emlen = (embits + 7) / 8, hlen, slen, dblen;
        uint8_t *em, *db, *salt;
        unsigned l;

        if (!c->md)
                return ds_raise(-EINVAL, "RSA-PSS needs a digest");
        hlen = (size_t) EVP_MD_get_size(c->md);
        if (mhashlen != hlen)
                return ds_raise(-EINVAL, "digest is %zu bytes, %s has %zu", mhashlen, EVP_MD_get0_name(c->md), hlen);
        if (emlen < hlen + 2)
                return ds_raise(-EINVAL, "key too small for RSA-PSS with %s", EVP_MD_get0_name(c->md));

        switch (c->saltlen) {
        case SALTLEN_DIGEST:
                slen = hlen;
                break;
        case SALTLEN_AUTO:
        case SALTLEN_MAX:
                slen = emlen - hlen - 2;
                break;
        case SALTLEN_AUTO_DIGEST_MAX:
                slen = MIN(hlen, emlen - hlen - 2);
                break;
        default:
                if (c->saltlen < 0)
                        return ds_raise(-EINVAL, "bad PSS salt length %d", c->saltlen);
                slen = (size_t) c->saltlen;
        }
        if (emlen < hlen + slen + 2)
                return ds_raise(-EINVAL, "PSS salt of %zu bytes does not fit the key", slen);

        memset(out, 0, k);
        em = out + (k - emlen);
        dblen = emlen - hlen - 1;
        db = em;
        /* DB = PS ‖ 0x01 ‖ salt; the salt goes straight into place. */
        db[dblen - slen - 1] = 0x01;
        salt = db + dblen - slen;
        if (slen > 0 && RAND_bytes_ex(c->prov->libctx, salt, slen, 0) <= 0)
                return ds_raise(-EIO, "PSS salt");

        /* H = Hash(0x00×8 ‖ mHash ‖ salt), placed after DB. */
        h = EVP_MD_CTX_new();
        if (!h)
                return ds_raise(-ENOMEM, "PSS");
        if (!EVP_DigestInit_ex2(h, c->md, NULL) ||
            !EVP_DigestUpdate(h, zeros, sizeof(zeros)) ||
            !EVP_DigestUpdate(h, mhash, hlen) ||
            !EVP_DigestUpdate(h, salt, slen) ||
            !EVP_DigestFinal_ex(h, em + dblen, &l))
                return ds_raise(-EIO, "PSS digest");

        if (!mgf1_xor(mgf, em + dblen, hlen, db, dblen))
                return 0;
        db[0] &= 0xff >> (8 * emlen - embits);
        em[emlen - 1] = 0xbc;
        return 1;
}

/* ---- signature ---- */

static void *ds_sig_newctx(void *provctx, const char *propq) {
        DsSigCtx *c = calloc(1, sizeof(DsSigCtx));

        if (!c)
                goto oom;
        c->prov = provctx;
        c->pad = RSA_PKCS1_PADDING;
        c->saltlen = SALTLEN_AUTO;
        if (propq) {
                c->propq = strdup(propq);
                if (!c->propq)
                        goto oom;
        }
        return c;
oom:
        free(c);
        ds_raise(-ENOMEM, "signature context");
        return NULL;
}

static void ds_sig_freectx(void *ctx) {
        DsSigCtx *c = ctx;

        if (!c)
                return;
        EVP_MD_CTX_free(c->mdctx);
        EVP_MD_free(c->md);
        EVP_MD_free(c->mgf1_md);
        free(c->propq);
        free(c);
}

static void *ds_sig_dupctx(void *ctx) {
        DsSigCtx *c = ctx, *d;

        d = calloc(1, sizeof(DsSigCtx));
        if (!d)
                goto oom;
        *d = *c;
        d->propq = NULL;
        d->mdctx = NULL;
        if (d->md)
                EVP_MD_up_ref(d->md);
        if (d->mgf1_md)
                EVP_MD_up_ref(d->mgf1_md);
        if (c->propq) {
                d->propq = strdup(c->propq);
                if (!d->propq)
                        goto oom;
        }
        if (c->mdctx) {
                d->mdctx = EVP_MD_CTX_new();
                if (!d->mdctx || !EVP_MD_CTX_copy_ex(d->mdctx, c->mdctx))
                        goto oom;
        }
        return d;
oom:
        ds_sig_freectx(d);
        ds_raise(-ENOMEM, "signature context copy");
        return NULL;
}

static int ds_sig_set_md(DsSigCtx *c, EVP_MD **slot, const char *name, const char *props) {
        EVP_MD *md;

        md = EVP_MD_fetch(c->prov->libctx, name, props ?: c->propq);
        if (!md)
                return ds_raise(-EINVAL, "unknown digest '%s'", name);
        if (EVP_MD_get_size(md) <= 0 || (EVP_MD_get_flags(md) & EVP_MD_FLAG_XOF)) {
                EVP_MD_free(md);
                return ds_raise(-EINVAL, "digest '%s' cannot be used with RSA", name);
        }
        EVP_MD_free(*slot);
        *slot = md;
        return 1;
}

static int parse_saltlen(const OSSL_PARAM *p, int *ret) {
        const char *s;
        int64_t v;

        if (p->data_type != OSSL_PARAM_UTF8_STRING) {
                int i;

                if (!OSSL_PARAM_get_int(p, &i))
                        return ds_raise(-EINVAL, "bad PSS salt length");
                if (i < SALTLEN_AUTO_DIGEST_MAX)
                        return ds_raise(-EINVAL, "bad PSS salt length %d", i);
                *ret = i;
                return 1;
        }
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
                return ds_raise(-EINVAL, "bad PSS salt length");
        if (streq(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST))
                *ret = SALTLEN_DIGEST;
        else if (streq(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX))
                *ret = SALTLEN_MAX;
        else if (streq(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO))
                *ret = SALTLEN_AUTO;
        else if (streq(s, "auto-digestmax"))
                *ret = SALTLEN_AUTO_DIGEST_MAX;
        else if (safe_atoi64(s, 10, &v) >= 0 && v >= 0 && v <= 4096)
                *ret = (int) v;
        else
                return ds_raise(-EINVAL, "bad PSS salt length '%s'", s);
        return 1;
}

static int ds_sig_set_ctx_params(void *ctx, const OSSL_PARAM params[]) {
        DsSigCtx *c = ctx;
        const OSSL_PARAM *p;

        if (!c)
                return 0;
        if (!params)
                return 1;

        p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
        if (p) {
                int pad;

                if (p->data_type == OSSL_PARAM_UTF8_STRING) {
                        const char *s;

                        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
                                return ds_raise(-EINVAL, "bad pad mode");
                        if (streq(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15))
                                pad = RSA_PKCS1_PADDING;
                        else if (streq(s, OSSL_PKEY_RSA_PAD_MODE_PSS))
                                pad = RSA_PKCS1_PSS_PADDING;
                        else
                                return ds_raise(-EOPNOTSUPP, "pad mode '%s'", s);
                } else if (!OSSL_PARAM_get_int(p, &pad))
                        return ds_raise(-EINVAL, "bad pad mode");
                if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_PSS_PADDING)
                        return ds_raise(-EOPNOTSUPP, "pad mode %d (only pkcs1 and pss)", pad);
                c->pad = pad;
        }

        p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
        if (p) {
                const OSSL_PARAM *pp = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PROPERTIES);
                const char *name, *props = NULL;

                if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) ||
                    (pp && !OSSL_PARAM_get_utf8_string_ptr(pp, &props)))
                        return ds_raise(-EINVAL, "bad digest parameter");
                if (c->mdctx)
                        return ds_raise(-EINVAL, "digest cannot change during a digest-sign");
                if (!ds_sig_set_md(c, &c->md, name, props))
                        return 0;
        }

        p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
        if (p) {
                const OSSL_PARAM *pp = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES);
                const char *name, *props = NULL;

                if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) ||
                    (pp && !OSSL_PARAM_get_utf8_string_ptr(pp, &props)))
                        return ds_raise(-EINVAL, "bad MGF1 digest parameter");
                if (!ds_sig_set_md(c, &c->mgf1_md, name, props))
                        return 0;
        }

        p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
        if (p && !parse_saltlen(p, &c->saltlen))
                return 0;

        return 1;
}

static const OSSL_PARAM ds_sig_settable_table[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END
};

static const OSSL_PARAM *ds_sig_settable_ctx_params(void *ctx, void *provctx) {
        return ds_sig_settable_table;
}

/* DER AlgorithmIdentifier for PKCS#1 v1.5 with the current digest. */
static int algorithm_id(const DsSigCtx *c, uint8_t der[static 15]) {
        static const uint8_t head[] = { 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01 };

        if (c->pad != RSA_PKCS1_PADDING || !c->md)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(pkcs1_algorithm_ids); i++)
                if (pkcs1_algorithm_ids[i].nid == EVP_MD_get_type(c->md)) {
                        memcpy(der, head, sizeof(head));
                        der[12] = pkcs1_algorithm_ids[i].last;
                        der[13] = 0x05;         /* NULL parameters */
                        der[14] = 0x00;
                        return 1;
                }
        return 0;
}

static int ds_sig_get_ctx_params(void *ctx, OSSL_PARAM params[]) {
        DsSigCtx *c = ctx;
        OSSL_PARAM *p;

        if (!c)
                return 0;

        p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);
        if (p) {
                uint8_t der[15];

                if (!algorithm_id(c, der))
                        return ds_raise(-EOPNOTSUPP, "no AlgorithmIdentifier for this padding/digest");
                if (!OSSL_PARAM_set_octet_string(p, der, sizeof(der)))
                        return 0;
        }

        p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
        if (p) {
                if (p->data_type == OSSL_PARAM_UTF8_STRING) {
                        if (!OSSL_PARAM_set_utf8_string(p, c->pad == RSA_PKCS1_PSS_PADDING ?
                                                        OSSL_PKEY_RSA_PAD_MODE_PSS : OSSL_PKEY_RSA_PAD_MODE_PKCSV15))
                                return 0;
                } else if (!OSSL_PARAM_set_int(p, c->pad))
                        return 0;
        }

        p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST);
        if (p && !OSSL_PARAM_set_utf8_string(p, c->md ? EVP_MD_get0_name(c->md) : ""))
                return 0;

        p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
        if (p) {
                const EVP_MD *m = c->mgf1_md ?: c->md;

                if (!OSSL_PARAM_set_utf8_string(p, m ? EVP_MD_get0_name(m) : ""))
                        return 0;
        }

        p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
        if (p) {
                if (p->data_type == OSSL_PARAM_UTF8_STRING) {
                        char buf[32];
                        const char *s = buf;

                        switch (c->saltlen) {
                        case SALTLEN_DIGEST:
                                s = OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST;
                                break;
                        case SALTLEN_MAX:
                                s = OSSL_PKEY_RSA_PSS_SALT_LEN_MAX;
                                break;
                        case SALTLEN_AUTO:
                                s = OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO;
                                break;
                        case SALTLEN_AUTO_DIGEST_MAX:
                                s = "auto-digestmax";
                                break;
                        default:
                                snprintf(buf, sizeof(buf), "%d", c->saltlen);
                        }
                        if (!OSSL_PARAM_set_utf8_string(p, s))
                                return 0;
                } else if (!OSSL_PARAM_set_int(p, c->saltlen))
                        return 0;
        }
        return 1;
}

static const OSSL_PARAM ds_sig_gettable_table[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END
};

static const OSSL_PARAM *ds_sig_gettable_ctx_params(void *ctx, void *provctx) {
        return ds_sig_gettable_table;
}

static int ds_sig_sign_init(void *ctx, void *provkey, const OSSL_PARAM params[]) {
        DsSigCtx *c = ctx;
        DsProvKey *k = provkey;

        if (!c || !k)
                return ds_raise(-EINVAL, "no key");
        if (!k->ds)
                return ds_raise(-ENOKEY, "not a DS private key");
        c->key = k;
        c->pad = RSA_PKCS1_PADDING;
        c->saltlen = SALTLEN_AUTO;
        EVP_MD_free(c->md);
        EVP_MD_free(c->mgf1_md);
        c->md = c->mgf1_md = NULL;
        EVP_MD_CTX_free(c->mdctx);
        c->mdctx = NULL;
        return ds_sig_set_ctx_params(c, params);
}

static void (*sign_observer)(uint64_t nsec, void *userdata);
static void *sign_observer_userdata;

void ds_provider_set_sign_observer(void (*fn)(uint64_t nsec, void *userdata), void *userdata) {
        sign_observer = fn;
        sign_observer_userdata = userdata;
}

static uint64_t mono_nsec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}

static int ds_sig_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                       const unsigned char *tbs, size_t tbslen) {
        DsSigCtx *c = ctx;
        _cleanup_free_ uint8_t *em = NULL;
        size_t k;
        int r;

        if (!c || !c->key || !c->key->ds)
                return ds_raise(-ENOKEY, "sign without a DS key");
        k = (c->key->bits + 7) / 8;
        if (!sig) {
                *siglen = k;
                return 1;
        }
        if (sigsize < k)
                return ds_raise(-ENOBUFS, "signature buffer of %zu bytes, need %zu", sigsize, k);

        em = malloc(k);
        if (!em)
                return ds_raise(-ENOMEM, "sign");
        switch (c->pad) {
        case RSA_PKCS1_PADDING:
                if (!emsa_pkcs1_encode(c->md, tbs, tbslen, em, k))
                        return 0;
                break;
        case RSA_PKCS1_PSS_PADDING:
                if (!emsa_pss_encode(c, tbs, tbslen, em, k))
                        return 0;
                break;
        default:
                return ds_raise(-EOPNOTSUPP, "pad mode %d", c->pad);
        }

        uint64_t t0 = sign_observer ? mono_nsec() : 0;
        r = ds_key_sign_raw(c->key->ds, em, k, sig);
        if (sign_observer && r >= 0)
                sign_observer(mono_nsec() - t0, sign_observer_userdata);
        if (r < 0)
                return ds_raise(r, "DS signature failed: %s", esp_err_to_name(r));
        *siglen = k;
        return 1;
}

static int ds_sig_digest_sign_init(void *ctx, const char *mdname, void *provkey, const OSSL_PARAM params[]) {
        DsSigCtx *c = ctx;

        if (!ds_sig_sign_init(ctx, provkey, params))
                return 0;
        if (mdname && !ds_sig_set_md(c, &c->md, mdname, NULL))
                return 0;
        if (!c->md && !ds_sig_set_md(c, &c->md, "SHA256", NULL))
                return 0;
        c->mdctx = EVP_MD_CTX_new();
        if (!c->mdctx)
                return ds_raise(-ENOMEM, "digest-sign");
        if (!EVP_DigestInit_ex2(c->mdctx, c->md, NULL))
                return ds_raise(-EIO, "digest init");
        return 1;
}

static int ds_sig_digest_sign_update(void *ctx, const unsigned char *data, size_t datalen) {
        DsSigCtx *c = ctx;

        if (!c || !c->mdctx)
                return ds_raise(-EINVAL, "digest-sign not initialised");
        return EVP_DigestUpdate(c->mdctx, data, datalen);
}

static int ds_sig_digest_sign_final(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize) {
        DsSigCtx *c = ctx;
        uint8_t h[EVP_MAX_MD_SIZE];
        unsigned hlen;

        if (!c || !c->mdctx)
                return ds_raise(-EINVAL, "digest-sign not initialised");
        if (!sig)
                return ds_sig_sign(c, NULL, siglen, 0, NULL, 0);
        if (!EVP_DigestFinal_ex(c->mdctx, h, &hlen))
                return ds_raise(-EIO, "digest final");
        return ds_sig_sign(c, sig, siglen, sigsize, h, hlen);
}

static const OSSL_DISPATCH ds_signature_functions[] = {
        { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void)) ds_sig_newctx },
        { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void)) ds_sig_freectx },
        { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void)) ds_sig_dupctx },
        { OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void)) ds_sig_sign_init },
        { OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void)) ds_sig_sign },
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void)) ds_sig_digest_sign_init },
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void)) ds_sig_digest_sign_update },
        { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void)) ds_sig_digest_sign_final },
        { OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void)) ds_sig_get_ctx_params },
        { OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void)) ds_sig_gettable_ctx_params },
        { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void)) ds_sig_set_ctx_params },
        { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void)) ds_sig_settable_ctx_params },
        {}
};

/* ---- the provider ---- */

static const OSSL_ALGORITHM ds_keymgmt_algs[] = {
        { DS_PROV_RSA_NAMES, DS_PROV_PROPS, ds_keymgmt_functions, "RSA keys held by the emulated DS" },
        {}
};

static const OSSL_ALGORITHM ds_signature_algs[] = {
        { DS_PROV_RSA_NAMES, DS_PROV_PROPS, ds_signature_functions, "RSA signatures through the emulated DS" },
        {}
};

static const OSSL_ALGORITHM *ds_prov_query(void *provctx, int operation_id, int *no_cache) {
        *no_cache = 0;
        if (operation_id == OSSL_OP_KEYMGMT)
                return ds_keymgmt_algs;
        if (operation_id == OSSL_OP_SIGNATURE)
                return ds_signature_algs;
        return NULL;
}

static void ds_prov_teardown(void *provctx) {
        DsProvCtx *p = provctx;

        if (!p)
                return;
        OSSL_LIB_CTX_free(p->libctx);
        free(p);
}

static const OSSL_PARAM ds_prov_param_table[] = {
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, NULL, 0),
        OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
        OSSL_PARAM_END
};

static const OSSL_PARAM *ds_prov_gettable_params(void *provctx) {
        return ds_prov_param_table;
}

static int ds_prov_get_params(void *provctx, OSSL_PARAM params[]) {
        OSSL_PARAM *p;

        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
        if (p && !OSSL_PARAM_set_utf8_ptr(p, "espfleet DS provider"))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
        if (p && !OSSL_PARAM_set_utf8_ptr(p, "1"))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
        if (p && !OSSL_PARAM_set_int(p, 1))
                return 0;
        return 1;
}

static const OSSL_DISPATCH ds_prov_functions[] = {
        { OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void)) ds_prov_teardown },
        { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void)) ds_prov_query },
        { OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void)) ds_prov_gettable_params },
        { OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void)) ds_prov_get_params },
        {}
};

static int ds_prov_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                        const OSSL_DISPATCH **out, void **provctx) {
        DsProvCtx *p;

        p = calloc(1, sizeof(DsProvCtx));
        if (!p)
                return 0;
        p->handle = handle;
        /* Digests and randomness come from a child of the caller's context,
         * restricted to other providers so nothing loops back into us. */
        p->libctx = OSSL_LIB_CTX_new_child(handle, in);
        if (!p->libctx || !EVP_set_default_properties(p->libctx, DS_PROV_CHILD_PROPQ)) {
                ds_prov_teardown(p);
                return 0;
        }
        *out = ds_prov_functions;
        *provctx = p;
        return 1;
}

/* The providers we loaded, per library context: they stay loaded for the
 * life of the process (or of the context), and this list keeps them
 * referenced. */
typedef struct Loaded {
        OSSL_LIB_CTX *libctx;           /* not owned */
        OSSL_PROVIDER *dflt;
        OSSL_PROVIDER *ds;
        struct Loaded *next;
} Loaded;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static Loaded *loaded;

int ds_provider_init(OSSL_LIB_CTX *libctx) {
        Loaded *l = NULL;
        int r = 0;

        (void) pthread_once(&err_once, err_init);
        pthread_mutex_lock(&init_lock);
        if (OSSL_PROVIDER_available(libctx, DS_PROVIDER_NAME))
                goto finish;
        l = calloc(1, sizeof(Loaded));
        if (!l) {
                r = -ENOMEM;
                goto finish;
        }
        l->libctx = libctx;
        /* Loading any provider explicitly turns off the implicit default
         * one, which supplies every digest, cipher and the software keys. */
        l->dflt = OSSL_PROVIDER_load(libctx, "default");
        if (!l->dflt || !OSSL_PROVIDER_add_builtin(libctx, DS_PROVIDER_NAME, ds_prov_init)) {
                r = -EIO;
                goto finish;
        }
        l->ds = OSSL_PROVIDER_load(libctx, DS_PROVIDER_NAME);
        if (!l->ds) {
                r = -EIO;
                goto finish;
        }
        l->next = loaded;
        loaded = TAKE_PTR(l);
finish:
        if (l) {
                if (l->dflt)
                        OSSL_PROVIDER_unload(l->dflt);
                free(l);
        }
        pthread_mutex_unlock(&init_lock);
        return r;
}

int ds_provider_pkey_new(OSSL_LIB_CTX *libctx, DsKey *key, EVP_PKEY **ret) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *pkey = NULL;
        OSSL_PARAM params[2];
        int r;

        if (!key || !ret || !ds_key_public(key))
                return -EINVAL;
        r = ds_provider_init(libctx);
        if (r < 0)
                return r;

        ctx = EVP_PKEY_CTX_new_from_name(libctx, "RSA", DS_PROV_PROPS);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0)
                return -EIO;
        params[0] = OSSL_PARAM_construct_octet_string(DS_PROV_PARAM_KEY, &key, sizeof(key));
        params[1] = OSSL_PARAM_construct_end();
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) <= 0)
                return -EIO;
        *ret = pkey;
        return 0;
}

bool ds_provider_pkey_is_ds(const EVP_PKEY *pkey) {
        const OSSL_PROVIDER *p;

        if (!pkey)
                return false;
        p = EVP_PKEY_get0_provider(pkey);
        return p && streq(OSSL_PROVIDER_get0_name(p), DS_PROVIDER_NAME);
}
