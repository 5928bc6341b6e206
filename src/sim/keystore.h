/* SPDX-License-Identifier: MIT */
#pragma once

/* Where a device's TLS identity comes from. The private key is the DS
 * peripheral's (src/dsemu/ds-provider.h): an EVP_PKEY whose signing goes
 * through the emulated DS, so no private key is ever read from disk. This is
 * the one place that knows it: swapping the key backing means changing
 * keystore.c only. */

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fleet/fleet-dir.h"

typedef struct DeviceIdentity {
        X509 *cert;             /* device certificate (CN = device id) */
        EVP_PKEY *key;          /* DS-backed private key */
        DsKey *ds_key;          /* keeps the key alive; borrows the device's eFuse */
} DeviceIdentity;

/* Builds the identity of a loaded device. `d` must outlive it. */
int keystore_load(const FleetDevice *d, DeviceIdentity *ret, char *err, size_t errlen);
void device_identity_done(DeviceIdentity *i);

/* The fleet CA (FLEET/ca.crt) as one X509_STORE shared by every device. */
int keystore_load_ca(const char *fleet_dir, X509_STORE **ret, char *err, size_t errlen);
