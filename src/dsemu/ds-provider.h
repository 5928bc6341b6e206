/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

/* "espds": an in-process OpenSSL 3 provider whose RSA keys live in the
 * emulated DS peripheral (ds.h). It holds both the RSA key management and
 * the RSA signature operation, because libssl fails when the two come from
 * different providers (openssl/openssl#16614); digests, ciphers and every
 * other algorithm come from the default provider. Signatures are PKCS#1 v1.5
 * or RSA-PSS: the encoding is done here, the private operation Z = X^Y mod M
 * is ds_key_sign_raw(), so TLS 1.2 and TLS 1.3 client/server authentication
 * signs through the DS. No private key material can be exported from an
 * espds key: export, encoders and PEM_write_PrivateKey fail.
 *
 * Errors inside the provider go onto the OpenSSL error queue with the
 * provider's own library code and the ESP-IDF code as reason
 * (e.g. ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST); ds_provider_pop_error() turns
 * them back into our negative int convention.
 *
 * Not thread-safe per DsKey: ds_key_sign_raw() updates the key's caches, so
 * one DsKey must be used from one thread at a time. */

#include <stdbool.h>

#include <openssl/evp.h>

#include "dsemu/ds.h"

#define DS_PROVIDER_NAME "espds"

/* Register (OSSL_PROVIDER_add_builtin) and load "espds" into `libctx`
 * (NULL = the default library context), loading the "default" provider too
 * (explicitly loading a provider disables the implicit default). Idempotent
 * per library context; the providers stay loaded until the context is freed.
 * Returns 0 or -ENOMEM/-EIO. */
int ds_provider_init(OSSL_LIB_CTX *libctx);

/* A private EVP_PKEY (type "RSA", usable with SSL_CTX_use_PrivateKey,
 * EVP_DigestSign, EVP_PKEY_sign, X509_sign) whose private operation is
 * ds_key_sign_raw(key). Calls ds_provider_init(libctx) itself.
 *
 * Ownership: `key` is BORROWED. The DsKey (and the Efuse it borrows) must
 * outlive the returned EVP_PKEY and every SSL_CTX/SSL/EVP_PKEY_CTX that
 * holds a reference to it. The caller owns *ret (EVP_PKEY_free).
 * Returns 0, -EINVAL (NULL or no public key) or -EIO (OpenSSL failure). */
int ds_provider_pkey_new(OSSL_LIB_CTX *libctx, DsKey *key, EVP_PKEY **ret);

/* Whether `pkey` is an espds key (its private half lives in a DsKey). */
bool ds_provider_pkey_is_ds(const EVP_PKEY *pkey);

/* Drain this thread's OpenSSL error queue and return the most recent error
 * raised by the espds provider as a negative int (-ESP_ERR_HW_CRYPTO_DS_*,
 * -EINVAL, …), or 0 if the provider raised none. */
int ds_provider_pop_error(void);

/* Called after every signature the provider makes, with its duration in
 * nanoseconds (the DS histogram of the worker's metrics). NULL removes it.
 * One observer per process: the provider has no other state to hang it on. */
void ds_provider_set_sign_observer(void (*fn)(uint64_t nsec, void *userdata), void *userdata);
