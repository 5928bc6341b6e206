/* SPDX-License-Identifier: MIT */
#pragma once

/* The fleet PKI (issue #2 §2, issue #5): a PKI directory made by
 * `espfleet pki init DIR`, separate from the fleet directory:
 *
 *   ca.crt / ca.key                         ECDSA P-256 fleet CA
 *   broker.crt / broker.key                 MQTT broker server cert (serverAuth)
 *   ota.crt / ota.key                       OTA HTTPS server cert (serverAuth)
 *   operator.crt / operator.key             operator client cert (clientAuth, CN=operator)
 *   secure_boot_signing_key.pem             RSA-3072 Secure Boot V2 signing key
 *   secure_boot_pubkey.pem                  its public half
 *
 * Private keys are written mode 0600, everything else 0644. */

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define PKI_CA_CERT "ca.crt"
#define PKI_CA_KEY "ca.key"
#define PKI_BROKER_CERT "broker.crt"
#define PKI_BROKER_KEY "broker.key"
#define PKI_OTA_CERT "ota.crt"
#define PKI_OTA_KEY "ota.key"
#define PKI_OPERATOR_CERT "operator.crt"
#define PKI_OPERATOR_KEY "operator.key"
#define PKI_SB_KEY "secure_boot_signing_key.pem"
#define PKI_SB_PUBKEY "secure_boot_pubkey.pem"

#define PKI_DEFAULT_DAYS 3650u

typedef struct PkiOptions {
        char **hosts;           /* extra SANs (DNS names or IP addresses) for the servers */
        size_t n_hosts;
        unsigned days;          /* validity; 0 = PKI_DEFAULT_DAYS */
        bool force;             /* overwrite an existing PKI */
} PkiOptions;

/* Called once per file written (path, mode), so the CLI can list them. */
typedef void (*PkiCreatedFn)(const char *path, mode_t mode, void *userdata);

/* Creates the PKI in `dir` (created if missing). -EEXIST with a message when
 * `dir` already holds any PKI file and !force. */
int pki_init(const char *dir, const PkiOptions *o, PkiCreatedFn cb, void *userdata, char *err, size_t errlen);

typedef struct Pki Pki;

/* Loads ca.crt, ca.key, and the secure-boot key from a PKI dir made by
 * pki_init(); checks that the CA key matches the CA cert. */
int pki_load(const char *dir, Pki **ret, char *err, size_t errlen);
Pki *pki_free(Pki *p);
static inline void pki_freep(Pki **p) {
        pki_free(*p);
}

X509 *pki_ca_cert(const Pki *p);              /* borrowed */
EVP_PKEY *pki_secure_boot_key(const Pki *p);  /* borrowed; private */
const char *pki_dir(const Pki *p);

/* A device certificate: subject CN = `cn`, the public half of `key`,
 * clientAuth, signed by the fleet CA with SHA-256. Thread/fork safe. */
int pki_issue_device_cert(const Pki *p, const char *cn, EVP_PKEY *key, unsigned days, X509 **ret);

/* PEM helpers used by the fleet and CLI. */
int pki_cert_to_pem(X509 *c, char **ret, size_t *ret_len);   /* NUL-terminated, len excludes NUL */
int pki_read_cert(const char *path, X509 **ret, char *err, size_t errlen);
