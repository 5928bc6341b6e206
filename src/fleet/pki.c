/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <stdarg.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "basic/fileio.h"
#include "basic/errmsg.h"
#include "basic/macro.h"
#include "basic/openssl-util.h"
#include "fleet/pki.h"

struct Pki {
        char *dir;
        X509 *ca_cert;
        EVP_PKEY *ca_key;
        EVP_PKEY *sb_key;
};

static const char *ossl_error(char *buf, size_t size) {
        return openssl_last_error(buf, size, "unknown OpenSSL error");
}

static int gen_ec_p256(EVP_PKEY **ret) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        if (!k)
                return -EIO;
        *ret = k;
        return 0;
}

static int gen_rsa(unsigned bits, EVP_PKEY **ret) {
        EVP_PKEY *k = EVP_RSA_gen(bits);
        if (!k)
                return -EIO;
        *ret = k;
        return 0;
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
        int ok;
        if (!ext)
                return -EINVAL;
        ok = X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
        return ok ? 0 : -EIO;
}

typedef enum CertKind {
        CERT_CA,
        CERT_SERVER,
        CERT_CLIENT,
        _CERT_KIND_MAX,
        _CERT_KIND_INVALID = -EINVAL,
} CertKind;

/* Builds and signs one certificate. issuer == NULL: self-signed with `key`. */
static int make_cert(CertKind kind, const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                     unsigned days, const char *san, X509 **ret) {
        _cleanup_(X509_freep) X509 *c = NULL;
        _cleanup_(BN_freep) BIGNUM *serial = NULL;
        X509_NAME *name;
        X509V3_CTX ctx;
        int r;

        c = X509_new();
        serial = BN_new();
        if (!c || !serial)
                return -ENOMEM;
        if (!X509_set_version(c, X509_VERSION_3))
                return -EIO;
        /* 63 random bits: positive, unique enough, as RFC 5280 §4.1.2.2 asks. */
        if (!BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
            !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(c)))
                return -EIO;
        /* Back-date by an hour so that slightly skewed clocks still accept it. */
        if (!X509_gmtime_adj(X509_getm_notBefore(c), -3600) ||
            !X509_gmtime_adj(X509_getm_notAfter(c), (long) days * 24 * 3600))
                return -EIO;
        if (!X509_set_pubkey(c, key))
                return -EIO;

        name = X509_get_subject_name(c);
        if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *) "espfleet", -1, -1, 0) ||
            !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *) cn, -1, -1, 0))
                return -EINVAL;
        if (!X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name))
                return -EIO;

        X509V3_set_ctx(&ctx, issuer ?: c, c, NULL, NULL, 0);
        switch (kind) {
        case CERT_CA:
                r = add_ext(c, &ctx, NID_basic_constraints, "critical,CA:TRUE");
                if (r >= 0)
                        r = add_ext(c, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
                break;
        case CERT_SERVER:
                r = add_ext(c, &ctx, NID_basic_constraints, "critical,CA:FALSE");
                if (r >= 0)
                        r = add_ext(c, &ctx, NID_key_usage,
                                    EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA ? "critical,digitalSignature,keyEncipherment"
                                                                           : "critical,digitalSignature");
                if (r >= 0)
                        r = add_ext(c, &ctx, NID_ext_key_usage, "serverAuth");
                if (r >= 0 && san)
                        r = add_ext(c, &ctx, NID_subject_alt_name, san);
                break;
        case CERT_CLIENT:
                r = add_ext(c, &ctx, NID_basic_constraints, "critical,CA:FALSE");
                if (r >= 0)
                        r = add_ext(c, &ctx, NID_key_usage,
                                    EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA ? "critical,digitalSignature,keyEncipherment"
                                                                           : "critical,digitalSignature");
                if (r >= 0)
                        r = add_ext(c, &ctx, NID_ext_key_usage, "clientAuth");
                break;
        case _CERT_KIND_MAX:
        case _CERT_KIND_INVALID:
                r = -EINVAL;
                break;
        }
        if (r >= 0)
                r = add_ext(c, &ctx, NID_subject_key_identifier, "hash");
        if (r >= 0 && issuer)
                r = add_ext(c, &ctx, NID_authority_key_identifier, "keyid:always");
        if (r < 0)
                return r;

        if (X509_sign(c, issuer_key ?: key, EVP_sha256()) <= 0)
                return -EIO;
        *ret = TAKE_PTR(c);
        return 0;
}

static int bio_to_string(BIO *b, char **ret, size_t *ret_len) {
        char *data;
        long n = BIO_get_mem_data(b, &data);
        char *s;
        if (n < 0)
                return -EIO;
        s = malloc((size_t) n + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, data, (size_t) n);
        s[n] = 0;
        *ret = s;
        if (ret_len)
                *ret_len = (size_t) n;
        return 0;
}

int pki_cert_to_pem(X509 *c, char **ret, size_t *ret_len) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
        if (!b)
                return -ENOMEM;
        if (!PEM_write_bio_X509(b, c))
                return -EIO;
        return bio_to_string(b, ret, ret_len);
}

static int write_pem_cert(const char *path, X509 *c) {
        _cleanup_free_ char *pem = NULL;
        size_t len;
        int r = pki_cert_to_pem(c, &pem, &len);
        if (r < 0)
                return r;
        return write_file_atomic(path, pem, len, 0644);
}

static int write_pem_key(const char *path, EVP_PKEY *k, bool private) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
        char *data;
        long n;
        int r;

        if (!b)
                return -ENOMEM;
        if (private ? !PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) : !PEM_write_bio_PUBKEY(b, k))
                return -EIO;
        n = BIO_get_mem_data(b, &data);
        if (n < 0)
                return -EIO;
        r = write_file_atomic(path, data, (size_t) n, private ? 0600 : 0644);
        /* The memory BIO held a private key: wipe it before it is freed. */
        explicit_bzero(data, (size_t) n);
        return r;
}

static const char *const pki_files[] = {
        PKI_CA_CERT, PKI_CA_KEY, PKI_BROKER_CERT, PKI_BROKER_KEY, PKI_OTA_CERT, PKI_OTA_KEY,
        PKI_OPERATOR_CERT, PKI_OPERATOR_KEY, PKI_SB_KEY, PKI_SB_PUBKEY,
};

static bool host_is_safe(const char *h) {
        if (!*h || strlen(h) > 253)
                return false;
        for (const char *p = h; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '-' || *p == ':' || *p == '*' || *p == '_'))
                        return false;
        return true;
}

static int build_san(const PkiOptions *o, char **ret, char *err, size_t errlen) {
        _cleanup_free_ char *san = strdup("DNS:localhost,IP:127.0.0.1");
        if (!san)
                return -ENOMEM;
        for (size_t i = 0; i < o->n_hosts; i++) {
                const char *h = o->hosts[i];
                unsigned char buf[sizeof(struct in6_addr)];
                bool ip = inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
                char *n;
                if (!host_is_safe(h))
                        return errf(err, errlen, -EINVAL, "--host '%s' is not a DNS name or an IP address", h);
                if (!ip && strchr(h, ':'))
                        return errf(err, errlen, -EINVAL, "--host '%s' is not a DNS name or an IP address", h);
                if (asprintf(&n, "%s,%s:%s", san, ip ? "IP" : "DNS", h) < 0)
                        return -ENOMEM;
                free(san);
                san = n;
        }
        *ret = TAKE_PTR(san);
        return 0;
}

int pki_init(const char *dir, const PkiOptions *o, PkiCreatedFn cb, void *userdata, char *err, size_t errlen) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ca_key = NULL, *broker_key = NULL, *ota_key = NULL, *op_key = NULL,
                                            *sb_key = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *broker = NULL, *ota = NULL, *op = NULL;
        _cleanup_free_ char *san = NULL;
        unsigned days = o->days ?: PKI_DEFAULT_DAYS;
        char ebuf[256];
        int r;

        if (days > 36500)
                return errf(err, errlen, -ERANGE, "--days %u is more than 100 years", days);
        if (!o->force)
                for (size_t i = 0; i < ELEMENTSOF(pki_files); i++) {
                        _cleanup_free_ char *p = path_join(dir, pki_files[i]);
                        if (!p)
                                return -ENOMEM;
                        if (access(p, F_OK) == 0)
                                return errf(err, errlen, -EEXIST,
                                            "%s: a PKI already exists here; refusing to overwrite it (use --force to "
                                            "replace it, which invalidates every fleet provisioned with it)", p);
                }
        r = build_san(o, &san, err, errlen);
        if (r < 0)
                return r;
        r = mkdir_p(dir, 0755);
        if (r < 0)
                return errf(err, errlen, r, "%s: cannot create: %s", dir, strerror(-r));

        if (gen_ec_p256(&ca_key) < 0 || gen_ec_p256(&broker_key) < 0 || gen_ec_p256(&ota_key) < 0 ||
            gen_ec_p256(&op_key) < 0)
                return errf(err, errlen, -EIO, "generating ECDSA P-256 keys: %s", ossl_error(ebuf, sizeof ebuf));
        /* Secure Boot V2 on C3/S3 takes RSA-3072 only (esp-formats.md §6.1). */
        if (gen_rsa(3072, &sb_key) < 0)
                return errf(err, errlen, -EIO, "generating the RSA-3072 secure boot key: %s", ossl_error(ebuf, sizeof ebuf));

        r = make_cert(CERT_CA, "espfleet fleet CA", ca_key, NULL, NULL, days, NULL, &ca);
        if (r >= 0)
                r = make_cert(CERT_SERVER, "localhost", broker_key, ca, ca_key, days, san, &broker);
        if (r >= 0)
                r = make_cert(CERT_SERVER, "localhost", ota_key, ca, ca_key, days, san, &ota);
        if (r >= 0)
                r = make_cert(CERT_CLIENT, "operator", op_key, ca, ca_key, days, NULL, &op);
        if (r < 0)
                return errf(err, errlen, r, "creating certificates: %s", ossl_error(ebuf, sizeof ebuf));

        struct {
                const char *file;
                X509 *cert;
                EVP_PKEY *key;
                bool private;
        } out[] = {
                { PKI_CA_KEY, NULL, ca_key, true },
                { PKI_CA_CERT, ca, NULL, false },
                { PKI_BROKER_KEY, NULL, broker_key, true },
                { PKI_BROKER_CERT, broker, NULL, false },
                { PKI_OTA_KEY, NULL, ota_key, true },
                { PKI_OTA_CERT, ota, NULL, false },
                { PKI_OPERATOR_KEY, NULL, op_key, true },
                { PKI_OPERATOR_CERT, op, NULL, false },
                { PKI_SB_KEY, NULL, sb_key, true },
                { PKI_SB_PUBKEY, NULL, sb_key, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(out); i++) {
                _cleanup_free_ char *p = path_join(dir, out[i].file);
                if (!p)
                        return -ENOMEM;
                r = out[i].cert ? write_pem_cert(p, out[i].cert) : write_pem_key(p, out[i].key, out[i].private);
                if (r < 0)
                        return errf(err, errlen, r, "%s: cannot write: %s", p, strerror(-r));
                if (cb)
                        cb(p, out[i].private ? 0600 : 0644, userdata);
        }
        return 0;
}

Pki *pki_free(Pki *p) {
        if (!p)
                return NULL;
        free(p->dir);
        X509_free(p->ca_cert);
        EVP_PKEY_free(p->ca_key);
        EVP_PKEY_free(p->sb_key);
        free(p);
        return NULL;
}

int pki_read_cert(const char *path, X509 **ret, char *err, size_t errlen) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new_file(path, "r");
        X509 *c;
        if (!b)
                return errf(err, errlen, -errno ?: -ENOENT, "%s: cannot open: %s", path, strerror(errno ?: ENOENT));
        c = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!c) {
                ERR_clear_error();
                return errf(err, errlen, -EBADMSG, "%s: not a PEM certificate", path);
        }
        *ret = c;
        return 0;
}

static int read_private_key(const char *path, EVP_PKEY **ret, char *err, size_t errlen) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new_file(path, "r");
        EVP_PKEY *k;
        if (!b)
                return errf(err, errlen, -errno ?: -ENOENT, "%s: cannot open: %s", path, strerror(errno ?: ENOENT));
        k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        if (!k) {
                ERR_clear_error();
                return errf(err, errlen, -EBADMSG, "%s: not a PEM private key (or encrypted)", path);
        }
        *ret = k;
        return 0;
}

int pki_load(const char *dir, Pki **ret, char *err, size_t errlen) {
        _cleanup_(pki_freep) Pki *p = NULL;
        _cleanup_free_ char *ca = path_join(dir, PKI_CA_CERT), *cakey = path_join(dir, PKI_CA_KEY),
                            *sb = path_join(dir, PKI_SB_KEY);
        int r;

        if (!ca || !cakey || !sb)
                return -ENOMEM;
        p = calloc(1, sizeof *p);
        if (!p || !(p->dir = strdup(dir)))
                return -ENOMEM;
        r = pki_read_cert(ca, &p->ca_cert, err, errlen);
        if (r < 0)
                return r;
        r = read_private_key(cakey, &p->ca_key, err, errlen);
        if (r < 0)
                return r;
        if (X509_check_private_key(p->ca_cert, p->ca_key) != 1) {
                ERR_clear_error();
                return errf(err, errlen, -EBADMSG, "%s: does not match the CA certificate %s", cakey, ca);
        }
        r = read_private_key(sb, &p->sb_key, err, errlen);
        if (r < 0)
                return r;
        if (EVP_PKEY_get_base_id(p->sb_key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(p->sb_key) != 3072)
                return errf(err, errlen, -EBADMSG, "%s: the Secure Boot V2 signing key must be RSA-3072", sb);
        *ret = TAKE_PTR(p);
        return 0;
}

X509 *pki_ca_cert(const Pki *p) {
        return p->ca_cert;
}

EVP_PKEY *pki_secure_boot_key(const Pki *p) {
        return p->sb_key;
}

const char *pki_dir(const Pki *p) {
        return p->dir;
}

int pki_issue_device_cert(const Pki *p, const char *cn, EVP_PKEY *key, unsigned days, X509 **ret) {
        return make_cert(CERT_CLIENT, cn, key, p->ca_cert, p->ca_key, days ?: PKI_DEFAULT_DAYS, NULL, ret);
}
