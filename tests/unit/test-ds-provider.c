/* SPDX-License-Identifier: MIT */
/* The espds OpenSSL provider: signatures through the emulated DS, complete
 * in-memory TLS handshakes with the DS key as client certificate key. */
#include <criterion/criterion.h>
#include <errno.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "basic/esp-err.h"
#include "basic/openssl-util.h"
#include "dsemu/ds-provider.h"
#include "dsemu/ds.h"
#include "dsemu/efuse.h"

#define KEY_BLOCK 1

/* A device as provisioning leaves it: eFuse with the HMAC key, DS data, the
 * certificate; `plain` is the software key, kept here only to compare. */
typedef struct Device {
        Efuse *efuse;
        DsData data;
        EVP_PKEY *plain;
        X509 *cert;
        DsKey *ds;
        EVP_PKEY *pkey;                 /* espds key */
} Device;

static void device_done(Device *d) {
        EVP_PKEY_free(d->pkey);         /* before the DsKey it borrows */
        ds_key_free(d->ds);
        X509_free(d->cert);
        EVP_PKEY_free(d->plain);
        efuse_free(d->efuse);
        memset(d, 0, sizeof(*d));
}

static EVP_PKEY *rsa_new(unsigned bits) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
        cr_assert_not_null(k, "RSA-%u keygen", bits);
        return k;
}

/* Self-signed certificate for `pub`, signed with `signer` (may be a DS key:
 * that exercises the provider's AlgorithmIdentifier). */
static X509 *cert_new(const char *cn, EVP_PKEY *pub, EVP_PKEY *signer) {
        X509 *x = X509_new();
        X509_NAME *name;

        cr_assert_not_null(x);
        cr_assert(X509_set_version(x, 2));
        cr_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), 1));
        cr_assert(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
        cr_assert(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
        name = X509_get_subject_name(x);
        cr_assert(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *) cn, -1, -1, 0));
        cr_assert(X509_set_issuer_name(x, name));
        cr_assert(X509_set_pubkey(x, pub));
        cr_assert_gt(X509_sign(x, signer, EVP_sha256()), 0, "X509_sign with %s key",
                     ds_provider_pkey_is_ds(signer) ? "DS" : "plain");
        return x;
}

/* `tamper`: flip one bit of C before the DsKey is made. */
static void device_new(EspChip chip, unsigned bits, bool tamper, Device *d) {
        uint8_t hmac_key[32], iv[DS_IV_LEN];
        _cleanup_(X509_freep) X509 *tmp = NULL;

        memset(d, 0, sizeof(*d));
        cr_assert_eq(efuse_new(chip, &d->efuse), 0);
        cr_assert_eq(RAND_bytes(hmac_key, sizeof(hmac_key)), 1);
        cr_assert_eq(RAND_bytes(iv, sizeof(iv)), 1);
        cr_assert_eq(efuse_burn_key(d->efuse, KEY_BLOCK, hmac_key, EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE, true), 0);
        d->plain = rsa_new(bits);
        cr_assert_eq(ds_encrypt_params(chip, d->plain, hmac_key, iv, &d->data), 0);
        if (tamper)
                d->data.c[100] ^= 0x10;

        /* The DsKey knows only the public key, as a device does from its cert. */
        tmp = cert_new("esp-test", d->plain, d->plain);
        cr_assert_eq(ds_key_new(d->efuse, KEY_BLOCK, &d->data, X509_get0_pubkey(tmp), &d->ds), 0);
        cr_assert_eq(ds_key_bits(d->ds), bits);
        cr_assert_eq(ds_provider_pkey_new(NULL, d->ds, &d->pkey), 0);
        cr_assert(ds_provider_pkey_is_ds(d->pkey));

        /* The device certificate, self-signed through the DS (unless the DS is broken). */
        d->cert = tamper ? X509_dup(tmp) : cert_new("esp-test", d->plain, d->pkey);
        cr_assert_not_null(d->cert);
        cr_assert_eq(X509_verify(d->cert, d->plain), 1, "certificate signed through the DS verifies");
}

/* ---- TLS over a BIO pair ---- */

typedef struct Peer {
        EVP_PKEY *key;
        X509 *cert;
} Peer;

typedef struct TlsCase {
        int version;                    /* TLS1_2_VERSION or TLS1_3_VERSION */
        const char *sigalgs;            /* client signature algorithms, or NULL */
} TlsCase;

static SSL_CTX *ctx_new(bool server, const TlsCase *tc, EVP_PKEY *key, X509 *cert, X509 *trust) {
        SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
        X509_STORE *store;

        cr_assert_not_null(ctx);
        cr_assert(SSL_CTX_set_min_proto_version(ctx, tc->version));
        cr_assert(SSL_CTX_set_max_proto_version(ctx, tc->version));
        cr_assert_eq(SSL_CTX_use_certificate(ctx, cert), 1);
        cr_assert_eq(SSL_CTX_use_PrivateKey(ctx, key), 1, "SSL_CTX_use_PrivateKey");
        cr_assert_eq(SSL_CTX_check_private_key(ctx), 1, "SSL_CTX_check_private_key");
        store = SSL_CTX_get_cert_store(ctx);
        cr_assert(X509_STORE_add_cert(store, trust));
        SSL_CTX_set_verify(ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, NULL);
        if (tc->sigalgs) {
                /* Server: what it asks the client to sign with (CertificateRequest);
                 * client: what it is willing to use. */
                if (server)
                        cr_assert(SSL_CTX_set1_client_sigalgs_list(ctx, tc->sigalgs));
                else
                        cr_assert(SSL_CTX_set1_sigalgs_list(ctx, tc->sigalgs));
        }
        return ctx;
}

/* One complete handshake plus an application byte each way. Returns 0, or
 * -EPROTO when either side fails. `ret_sig_nid` gets the signature type the
 * server saw from the client (NID_rsaEncryption or NID_rsassaPss). */
static int handshake(const TlsCase *tc, const Peer *client, const Peer *server, int *ret_sig_nid) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *cctx = NULL, *sctx = NULL;
        SSL *c = NULL, *s = NULL;
        BIO *cb = NULL, *sb = NULL;
        bool cdone = false, sdone = false;
        int r = -EPROTO;

        cctx = ctx_new(false, tc, client->key, client->cert, server->cert);
        sctx = ctx_new(true, tc, server->key, server->cert, client->cert);
        c = SSL_new(cctx);
        s = SSL_new(sctx);
        cr_assert(c && s);
        cr_assert(BIO_new_bio_pair(&cb, 0, &sb, 0));
        SSL_set_bio(c, cb, cb);
        SSL_set_bio(s, sb, sb);
        SSL_set_connect_state(c);
        SSL_set_accept_state(s);

        for (int i = 0; i < 64 && !(cdone && sdone); i++) {
                if (!cdone) {
                        int k = SSL_do_handshake(c);
                        if (k == 1)
                                cdone = true;
                        else if (SSL_get_error(c, k) != SSL_ERROR_WANT_READ && SSL_get_error(c, k) != SSL_ERROR_WANT_WRITE)
                                goto finish;
                }
                if (!sdone) {
                        int k = SSL_do_handshake(s);
                        if (k == 1)
                                sdone = true;
                        else if (SSL_get_error(s, k) != SSL_ERROR_WANT_READ && SSL_get_error(s, k) != SSL_ERROR_WANT_WRITE)
                                goto finish;
                }
        }
        if (!(cdone && sdone))
                goto finish;

        cr_assert_eq(SSL_version(c), tc->version);
        cr_assert_eq(SSL_get_verify_result(s), X509_V_OK);
        cr_assert_eq(SSL_get_verify_result(c), X509_V_OK);
        {
                _cleanup_(X509_freep) X509 *peer = SSL_get1_peer_certificate(s);
                cr_assert_not_null(peer);
                cr_assert_eq(X509_cmp(peer, client->cert), 0);
        }
        cr_assert_eq(SSL_get_peer_signature_type_nid(s, ret_sig_nid), 1);

        /* Application data flows both ways (TLS 1.3 post-handshake messages too). */
        {
                char buf[8];
                size_t n;
                cr_assert_eq(SSL_write_ex(c, "ping", 4, &n), 1);
                cr_assert_eq(SSL_read_ex(s, buf, sizeof(buf), &n), 1);
                cr_assert_eq(n, 4);
                cr_assert_eq(memcmp(buf, "ping", 4), 0);
                cr_assert_eq(SSL_write_ex(s, "pong", 4, &n), 1);
                cr_assert_eq(SSL_read_ex(c, buf, sizeof(buf), &n), 1);
                cr_assert_eq(memcmp(buf, "pong", 4), 0);
        }
        r = 0;
finish:
        SSL_free(c);
        SSL_free(s);
        return r;
}

static const TlsCase tls12_pkcs1 = { TLS1_2_VERSION, "RSA+SHA256:RSA+SHA384:RSA+SHA512" };
static const TlsCase tls12_pss = { TLS1_2_VERSION, "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512" };
static const TlsCase tls13 = { TLS1_3_VERSION, NULL };

static void server_new(Peer *p) {
        p->key = rsa_new(2048);
        p->cert = cert_new("server", p->key, p->key);
}

static void peer_done(Peer *p) {
        EVP_PKEY_free(p->key);
        X509_free(p->cert);
}

/* TLS 1.2 with PKCS#1 v1.5, TLS 1.2 with PSS and TLS 1.3, the DS key on the
 * client (mTLS, as the devices use it). */
static void check_all_handshakes(EspChip chip, unsigned bits) {
        Device d;
        Peer server, client;
        int nid = NID_undef;

        device_new(chip, bits, false, &d);
        server_new(&server);
        client = (Peer) { d.pkey, d.cert };

        cr_assert_eq(handshake(&tls12_pkcs1, &client, &server, &nid), 0, "TLS 1.2 PKCS#1 v1.5, RSA-%u", bits);
        cr_assert_eq(nid, NID_rsaEncryption);
        cr_assert_eq(handshake(&tls12_pss, &client, &server, &nid), 0, "TLS 1.2 PSS, RSA-%u", bits);
        cr_assert_eq(nid, NID_rsassaPss);
        cr_assert_eq(handshake(&tls13, &client, &server, &nid), 0, "TLS 1.3, RSA-%u", bits);
        cr_assert_eq(nid, NID_rsassaPss);
        cr_assert_eq(ds_provider_pop_error(), 0);

        peer_done(&server);
        device_done(&d);
}

Test(ds_provider, tls_c3_rsa2048) {
        check_all_handshakes(ESP_CHIP_ESP32C3, 2048);
}

Test(ds_provider, tls_c3_rsa3072) {
        check_all_handshakes(ESP_CHIP_ESP32C3, 3072);
}

Test(ds_provider, tls_s3_rsa4096, .timeout = 120) {
        check_all_handshakes(ESP_CHIP_ESP32S3, 4096);
}

/* The DS key as the server's key too: it then signs ServerKeyExchange
 * (TLS 1.2) and CertificateVerify (TLS 1.3) as a server. */
Test(ds_provider, tls_ds_on_both_ends) {
        Device a, b;
        Peer pa, pb;
        int nid;

        device_new(ESP_CHIP_ESP32C3, 2048, false, &a);
        device_new(ESP_CHIP_ESP32C3, 2048, false, &b);
        pa = (Peer) { a.pkey, a.cert };
        pb = (Peer) { b.pkey, b.cert };
        cr_assert_eq(handshake(&tls12_pss, &pa, &pb, &nid), 0);
        cr_assert_eq(handshake(&tls12_pkcs1, &pa, &pb, &nid), 0);
        cr_assert_eq(handshake(&tls13, &pa, &pb, &nid), 0);
        device_done(&a);
        device_done(&b);
}

/* ---- signatures through the EVP API ---- */

static size_t digest_sign(EVP_PKEY *key, const char *md, int pad, int saltlen, const char *mgf1,
                          const void *msg, size_t len, uint8_t *sig, size_t size) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;
        size_t siglen = 0;

        cr_assert_not_null(c);
        cr_assert_eq(EVP_DigestSignInit_ex(c, &pctx, md, NULL, NULL, key, NULL), 1, "DigestSignInit %s", md);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, pad), 0);
        if (pad == RSA_PKCS1_PSS_PADDING) {
                cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen), 0);
                if (mgf1)
                        cr_assert_gt(EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, mgf1, NULL), 0);
        }
        /* Streamed: update, size query, final (EVP dups the provider context). */
        cr_assert_eq(EVP_DigestSignUpdate(c, msg, len / 2), 1);
        cr_assert_eq(EVP_DigestSignUpdate(c, (const uint8_t *) msg + len / 2, len - len / 2), 1);
        cr_assert_eq(EVP_DigestSignFinal(c, NULL, &siglen), 1);
        cr_assert_leq(siglen, size);
        cr_assert_eq(EVP_DigestSignFinal(c, sig, &siglen), 1, "DigestSignFinal %s pad %d", md, pad);
        return siglen;
}

static bool digest_verify(EVP_PKEY *key, const char *md, int pad, int saltlen, const char *mgf1,
                          const void *msg, size_t len, const uint8_t *sig, size_t siglen) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;

        cr_assert_eq(EVP_DigestVerifyInit_ex(c, &pctx, md, NULL, NULL, key, NULL), 1);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, pad), 0);
        if (pad == RSA_PKCS1_PSS_PADDING) {
                cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen), 0);
                if (mgf1)
                        cr_assert_gt(EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, mgf1, NULL), 0);
        }
        return EVP_DigestVerify(c, sig, siglen, msg, len) == 1;
}

Test(ds_provider, evp_signatures) {
        static const char *mds[] = { "SHA256", "SHA384", "SHA512", "SHA1", "SHA224" };
        static const char msg[] = "espfleet: the key never leaves the DS";
        uint8_t a[512], b[512];
        size_t la, lb;
        Device d;
        int bits = 0;
        BIGNUM *n1 = NULL, *n2 = NULL;

        device_new(ESP_CHIP_ESP32C3, 2048, false, &d);

        /* Public parameters are visible, and equal to the software key's. */
        cr_assert_eq(EVP_PKEY_get_bits(d.pkey), 2048);
        cr_assert_eq(EVP_PKEY_get_size(d.pkey), 256);
        cr_assert_eq(EVP_PKEY_get_security_bits(d.pkey), 112);
        cr_assert(EVP_PKEY_is_a(d.pkey, "RSA"));
        cr_assert(EVP_PKEY_get_int_param(d.pkey, OSSL_PKEY_PARAM_BITS, &bits));
        cr_assert_eq(bits, 2048);
        cr_assert(EVP_PKEY_get_bn_param(d.pkey, OSSL_PKEY_PARAM_RSA_N, &n1));
        cr_assert(EVP_PKEY_get_bn_param(d.plain, OSSL_PKEY_PARAM_RSA_N, &n2));
        cr_assert_eq(BN_cmp(n1, n2), 0);
        BN_free(n1);
        BN_free(n2);
        cr_assert_eq(EVP_PKEY_eq(d.pkey, d.plain), 1);
        cr_assert(!ds_provider_pkey_is_ds(d.plain));

        /* PKCS#1 v1.5 is deterministic: byte-identical to the software key. */
        for (size_t i = 0; i < ELEMENTSOF(mds); i++) {
                la = digest_sign(d.pkey, mds[i], RSA_PKCS1_PADDING, 0, NULL, msg, sizeof(msg), a, sizeof(a));
                lb = digest_sign(d.plain, mds[i], RSA_PKCS1_PADDING, 0, NULL, msg, sizeof(msg), b, sizeof(b));
                cr_assert_eq(la, 256);
                cr_assert_eq(lb, 256);
                cr_assert_eq(memcmp(a, b, la), 0, "PKCS#1 v1.5 %s signature equals the software one", mds[i]);
                cr_assert(digest_verify(d.plain, mds[i], RSA_PKCS1_PADDING, 0, NULL, msg, sizeof(msg), a, la));
        }

        /* A duplicate still signs through the same DS key. */
        {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *dup = EVP_PKEY_dup(d.pkey);
                cr_assert_not_null(dup);
                cr_assert(ds_provider_pkey_is_ds(dup));
                la = digest_sign(dup, "SHA256", RSA_PKCS1_PADDING, 0, NULL, msg, sizeof(msg), a, sizeof(a));
                lb = digest_sign(d.plain, "SHA256", RSA_PKCS1_PADDING, 0, NULL, msg, sizeof(msg), b, sizeof(b));
                cr_assert_eq(la, lb);
                cr_assert_eq(memcmp(a, b, la), 0);
        }

        /* PSS: random salt, so verify; each salt length rule, verified strictly. */
        static const struct {
                const char *md, *mgf1;
                int sign_salt, verify_salt;
        } pss[] = {
                { "SHA256", NULL, RSA_PSS_SALTLEN_DIGEST, 32 },
                { "SHA384", NULL, RSA_PSS_SALTLEN_DIGEST, 48 },
                { "SHA512", NULL, RSA_PSS_SALTLEN_DIGEST, 64 },
                { "SHA256", NULL, RSA_PSS_SALTLEN_MAX, 256 - 32 - 2 },
                { "SHA256", NULL, RSA_PSS_SALTLEN_AUTO, 256 - 32 - 2 },
                { "SHA256", NULL, 0, 0 },
                { "SHA256", NULL, 20, 20 },
                { "SHA256", "SHA1", 20, 20 },
                { "SHA1", NULL, RSA_PSS_SALTLEN_DIGEST, 20 },
        };
        for (size_t i = 0; i < ELEMENTSOF(pss); i++) {
                la = digest_sign(d.pkey, pss[i].md, RSA_PKCS1_PSS_PADDING, pss[i].sign_salt, pss[i].mgf1,
                                 msg, sizeof(msg), a, sizeof(a));
                cr_assert_eq(la, 256);
                cr_assert(digest_verify(d.plain, pss[i].md, RSA_PKCS1_PSS_PADDING, pss[i].verify_salt, pss[i].mgf1,
                                        msg, sizeof(msg), a, la), "PSS case %zu verifies", i);
                /* A wrong salt length must not verify: the check is real. */
                cr_assert(!digest_verify(d.plain, pss[i].md, RSA_PKCS1_PSS_PADDING, pss[i].verify_salt + 1, pss[i].mgf1,
                                         msg, sizeof(msg), a, la));
        }

        /* Salt length given as strings, as `openssl pkeyutl -pkeyopt` does. */
        {
                _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
                EVP_PKEY_CTX *pctx = NULL;
                cr_assert_eq(EVP_DigestSignInit_ex(c, &pctx, "SHA256", NULL, NULL, d.pkey, NULL), 1);
                cr_assert_gt(EVP_PKEY_CTX_ctrl_str(pctx, "rsa_padding_mode", "pss"), 0);
                cr_assert_gt(EVP_PKEY_CTX_ctrl_str(pctx, "rsa_pss_saltlen", "digest"), 0);
                la = sizeof(a);
                cr_assert_eq(EVP_DigestSign(c, a, &la, (const uint8_t *) msg, sizeof(msg)), 1);
                cr_assert(digest_verify(d.plain, "SHA256", RSA_PKCS1_PSS_PADDING, 32, NULL, msg, sizeof(msg), a, la));
                cr_assert_leq(EVP_PKEY_CTX_ctrl_str(pctx, "rsa_pss_saltlen", "bogus"), 0);
                cr_assert_leq(EVP_PKEY_CTX_ctrl_str(pctx, "rsa_padding_mode", "oaep"), 0);
                cr_assert_eq(ds_provider_pop_error(), -EOPNOTSUPP);
        }

        /* Sign a precomputed digest (EVP_PKEY_sign), both paddings. */
        {
                uint8_t h[32];
                unsigned hl;
                _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c1 = EVP_PKEY_CTX_new_from_pkey(NULL, d.pkey, NULL);
                _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c2 = EVP_PKEY_CTX_new_from_pkey(NULL, d.plain, NULL);
                _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *v = EVP_PKEY_CTX_new_from_pkey(NULL, d.plain, NULL);

                cr_assert(EVP_Digest(msg, sizeof(msg), h, &hl, EVP_sha256(), NULL));
                cr_assert_eq(EVP_PKEY_sign_init(c1), 1);
                cr_assert_gt(EVP_PKEY_CTX_set_signature_md(c1, EVP_sha256()), 0);
                cr_assert_eq(EVP_PKEY_sign_init(c2), 1);
                cr_assert_gt(EVP_PKEY_CTX_set_signature_md(c2, EVP_sha256()), 0);
                la = sizeof(a);
                lb = sizeof(b);
                cr_assert_eq(EVP_PKEY_sign(c1, a, &la, h, hl), 1);
                cr_assert_eq(EVP_PKEY_sign(c2, b, &lb, h, hl), 1);
                cr_assert_eq(la, lb);
                cr_assert_eq(memcmp(a, b, la), 0);

                /* A digest of the wrong size for the configured hash is refused. */
                la = sizeof(a);
                cr_assert_neq(EVP_PKEY_sign(c1, a, &la, h, 20), 1);
                cr_assert_eq(ds_provider_pop_error(), -EINVAL);

                cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(c1, RSA_PKCS1_PSS_PADDING), 0);
                cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(c1, RSA_PSS_SALTLEN_DIGEST), 0);
                la = sizeof(a);
                cr_assert_eq(EVP_PKEY_sign(c1, a, &la, h, hl), 1);
                cr_assert_eq(EVP_PKEY_verify_init(v), 1);
                cr_assert_gt(EVP_PKEY_CTX_set_signature_md(v, EVP_sha256()), 0);
                cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(v, RSA_PKCS1_PSS_PADDING), 0);
                cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(v, 32), 0);
                cr_assert_eq(EVP_PKEY_verify(v, a, la, h, hl), 1);
        }

        device_done(&d);
}

/* ---- what must fail ---- */

static int write_private_pem(EVP_PKEY *k) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
        cr_assert_not_null(b);
        return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

Test(ds_provider, no_private_export) {
        Device d;
        _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
        _cleanup_(BIO_free_allp) BIO *p1 = BIO_new(BIO_s_mem()), *p2 = BIO_new(BIO_s_mem());
        BIGNUM *dd = NULL;
        unsigned char *der = NULL;
        char *s1, *s2;
        long l1, l2;

        device_new(ESP_CHIP_ESP32C3, 2048, false, &d);

        cr_assert_eq(write_private_pem(d.plain), 1, "control: a software key writes");
        cr_assert_neq(write_private_pem(d.pkey), 1, "PEM_write_PrivateKey of a DS key fails");
        cr_assert_leq(i2d_PrivateKey(d.pkey, &der), 0);
        cr_assert_null(der);
        cr_assert_neq(EVP_PKEY_todata(d.pkey, EVP_PKEY_KEYPAIR, &params), 1);
        cr_assert_null(params);
        cr_assert_eq(EVP_PKEY_get_bn_param(d.pkey, OSSL_PKEY_PARAM_RSA_D, &dd), 0);
        cr_assert_null(dd);
        ERR_clear_error();

        /* The public half exports, and is the software key's. */
        cr_assert_eq(EVP_PKEY_todata(d.pkey, EVP_PKEY_PUBLIC_KEY, &params), 1);
        cr_assert_not_null(OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_N));
        cr_assert_null(OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_D));
        cr_assert_eq(PEM_write_bio_PUBKEY(p1, d.pkey), 1);
        cr_assert_eq(PEM_write_bio_PUBKEY(p2, d.plain), 1);
        l1 = BIO_get_mem_data(p1, &s1);
        l2 = BIO_get_mem_data(p2, &s2);
        cr_assert_eq(l1, l2);
        cr_assert_eq(memcmp(s1, s2, (size_t) l1), 0);

        device_done(&d);
}

/* A certificate that does not belong to the DS key is caught by the
 * consistency check. */
Test(ds_provider, check_private_key_mismatch) {
        Device d;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *other = rsa_new(2048);
        _cleanup_(X509_freep) X509 *x = cert_new("other", other, other);
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

        device_new(ESP_CHIP_ESP32C3, 2048, false, &d);
        cr_assert_eq(X509_check_private_key(d.cert, d.pkey), 1);
        cr_assert_neq(X509_check_private_key(x, d.pkey), 1);
        cr_assert_eq(SSL_CTX_use_certificate(ctx, x), 1);
        cr_assert_neq(SSL_CTX_use_PrivateKey(ctx, d.pkey), 1, "a DS key that is not the certificate's is refused");
        ERR_clear_error();
        device_done(&d);
}

/* One flipped bit in C: the DS reports a digest mismatch, the handshake
 * fails, and the error queue carries the DS error. */
Test(ds_provider, tampered_ds_data_fails_handshake) {
        Device d;
        Peer server, client;
        int nid;
        const TlsCase *cases[] = { &tls12_pkcs1, &tls12_pss, &tls13 };

        device_new(ESP_CHIP_ESP32C3, 2048, true, &d);
        server_new(&server);
        client = (Peer) { d.pkey, d.cert };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                unsigned long e;
                ERR_clear_error();
                cr_assert_eq(handshake(cases[i], &client, &server, &nid), -EPROTO, "case %zu must fail", i);
                e = ERR_peek_error();
                cr_assert_neq(e, 0);
                cr_assert_eq(ds_provider_pop_error(), -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST, "case %zu", i);
        }

        /* The same through EVP, with the reason string named as in ESP-IDF. */
        {
                _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
                uint8_t sig[256];
                size_t len = sizeof(sig);
                unsigned long e;
                const char *why;

                ERR_clear_error();
                cr_assert_eq(EVP_DigestSignInit_ex(c, NULL, "SHA256", NULL, NULL, d.pkey, NULL), 1);
                cr_assert_neq(EVP_DigestSign(c, sig, &len, (const uint8_t *) "x", 1), 1);
                e = ERR_peek_error();
                why = ERR_reason_error_string(e);
                cr_assert_not_null(why);
                cr_assert_str_eq(why, "ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST");
                cr_assert_eq(ds_provider_pop_error(), -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST);
                cr_assert_eq(ERR_peek_error(), 0, "pop drains the queue");
        }

        peer_done(&server);
        device_done(&d);
}

/* The wrong eFuse purpose is the DS's HMAC failure. */
Test(ds_provider, wrong_purpose_is_hmac_fail) {
        _cleanup_(efuse_freep) Efuse *e = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *plain = rsa_new(2048), *pkey = NULL;
        uint8_t hmac_key[32] = { 1, 2, 3 }, iv[DS_IV_LEN] = { 4, 5, 6 }, sig[256];
        DsData data;
        DsKey *k = NULL;
        size_t len = sizeof(sig);
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();

        cr_assert_eq(efuse_new(ESP_CHIP_ESP32C3, &e), 0);
        cr_assert_eq(efuse_burn_key(e, KEY_BLOCK, hmac_key, EFUSE_KEY_PURPOSE_HMAC_UP, true), 0);
        cr_assert_eq(ds_encrypt_params(ESP_CHIP_ESP32C3, plain, hmac_key, iv, &data), 0);
        cr_assert_eq(ds_key_new(e, KEY_BLOCK, &data, plain, &k), 0);
        cr_assert_eq(ds_provider_pkey_new(NULL, k, &pkey), 0);
        cr_assert_eq(EVP_DigestSignInit_ex(c, NULL, "SHA256", NULL, NULL, pkey, NULL), 1);
        cr_assert_neq(EVP_DigestSign(c, sig, &len, (const uint8_t *) "x", 1), 1);
        cr_assert_eq(ds_provider_pop_error(), -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL);
        EVP_MD_CTX_free(TAKE_PTR(c));
        EVP_PKEY_free(TAKE_PTR(pkey));
        ds_key_free(k);
}

Test(ds_provider, init_is_idempotent_and_default_stays) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();

        cr_assert_eq(ds_provider_init(NULL), 0);
        cr_assert_eq(ds_provider_init(NULL), 0);
        cr_assert(OSSL_PROVIDER_available(NULL, DS_PROVIDER_NAME));
        cr_assert(OSSL_PROVIDER_available(NULL, "default"));
        cr_assert_eq(ds_provider_pkey_new(NULL, NULL, &k), -EINVAL);

        /* Software RSA keys still come from, and stay in, the default provider. */
        k = rsa_new(1024);
        cr_assert(!ds_provider_pkey_is_ds(k));
        cr_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(k)), "default");
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        cr_assert_not_null(ctx);
        cr_assert_eq(EVP_PKEY_fromdata_init(ctx), 1);
        {
                /* Importing private material never lands in espds (which would refuse it). */
                _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *copy = NULL;
                cr_assert_eq(EVP_PKEY_todata(k, EVP_PKEY_KEYPAIR, &params), 1);
                cr_assert_eq(EVP_PKEY_fromdata(ctx, &copy, EVP_PKEY_KEYPAIR, params), 1);
                cr_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(copy)), "default");
        }

        /* Another library context gets its own copy. */
        cr_assert_not_null(lc);
        cr_assert_eq(ds_provider_init(lc), 0);
        cr_assert_eq(ds_provider_init(lc), 0);
        cr_assert(OSSL_PROVIDER_available(lc, DS_PROVIDER_NAME));
        OSSL_LIB_CTX_free(lc);
}
