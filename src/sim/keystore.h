/* SPDX-License-Identifier: MIT */
#pragma once

/* Where a device's TLS identity comes from. The private key is the DS
 * peripheral's (src/dsemu/ds-provider.h): an EVP_PKEY whose signing goes
 * through the emulated DS, so no private key is ever read from disk. */

#include <openssl/evp.h>
#include <openssl/x509.h>

typedef struct DeviceIdentity {
        X509 *cert;             /* device certificate (CN = device id) */
        EVP_PKEY *key;          /* DS-backed private key */
        void *backing;          /* what keeps the key alive (DsKey, eFuse…) */
        void (*backing_free)(void *backing);
} DeviceIdentity;

/* Loads the identity of device `id` from the fleet directory. */
int keystore_load(const char *fleet_dir, const char *id, DeviceIdentity *ret,
                  char *err, size_t errlen);
void device_identity_done(DeviceIdentity *i);

/* The fleet CA as one X509_STORE shared by every device (FLEET/ca.crt). */
int keystore_load_ca(const char *fleet_dir, X509_STORE **ret, char *err, size_t errlen);
