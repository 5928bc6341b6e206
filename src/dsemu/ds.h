/* SPDX-License-Identifier: MIT */
#pragma once

/* The Digital Signature peripheral of ESP32-C3/S3 (esp-formats.md §1).
 *
 * Contract shared by dsemu (implementation), ds-provider (OpenSSL glue) and
 * provisioning. Integers handed to and returned by the peripheral are
 * little-endian, as on the chip; ds_sign_be() is the convenience used by the
 * TLS provider (big-endian in, big-endian out, like RSA_private_encrypt with
 * no padding). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "dsemu/efuse.h"

#define DS_IV_LEN 16
#define DS_C_LEN_MAX 1584               /* S3: 3*512 + 48 */
#define DS_DATA_LEN(c_len) (4 + DS_IV_LEN + (c_len))

/* esp_ds_data_t (§1.4): what sits in the DS_DATA TLV. */
typedef struct DsData {
        uint32_t rsa_length;            /* key bits/32 - 1 (31, 63, 95, 127) */
        uint8_t iv[DS_IV_LEN];
        uint8_t c[DS_C_LEN_MAX];
        size_t c_len;                   /* 1200 on C3, 1584 on S3 */
} DsData;

/* Bytes of C for a chip (1200 or 1584), max key bits (3072 or 4096). */
size_t ds_c_len(EspChip chip);
unsigned ds_max_key_bits(EspChip chip);

/* configure_ds.py's calculate_rsa_ds_params (§1.3, §1.7): encrypt the RSA
 * private key `key` under HMAC-SHA256(hmac_key, 32*0xFF) with `iv`.
 * -EINVAL for a non-RSA key or a size the chip does not take. */
int ds_encrypt_params(EspChip chip, EVP_PKEY *key, const uint8_t hmac_key[32],
                      const uint8_t iv[DS_IV_LEN], DsData *ret);

/* Serialise/parse esp_ds_data_t (§1.4) for the DS_DATA TLV. */
int ds_data_to_bytes(const DsData *d, uint8_t *out, size_t out_size, size_t *ret_len);
int ds_data_from_bytes(EspChip chip, const uint8_t *in, size_t len, DsData *ret);

/* The peripheral: HMAC downstream from eFuse BLOCK_KEY<key_block>, AES-256-CBC
 * decrypt, MD check, padding check, Z = X^Y mod M. x_le/z_le are
 * (rsa_length+1)*4 bytes. Returns 0 or -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL (purpose
 * is not HMAC_DOWN_DIGITAL_SIGNATURE/HMAC_DOWN_ALL), -ESP_ERR_HW_CRYPTO_DS_INVALID_KEY
 * (empty key block), -ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST, -ESP_ERR_HW_CRYPTO_DS_INVALID_PADDING,
 * -ESP_ERR_INVALID_ARG. On error z_le is zeroed. */
int ds_sign(const Efuse *efuse, unsigned key_block, const DsData *data,
            const uint8_t *x_le, size_t len, uint8_t *z_le);

/* What the peripheral would compute with, without computing it: runs the
 * same HMAC downstream, AES-256-CBC decrypt, MD and padding checks as
 * ds_sign() and returns SHA-256 over the unsealed operands (Y, M, Rb, M' and
 * the length), never the operands themselves. Two DS data sealed from the
 * same RSA key under different HMAC keys and IVs have the same fingerprint;
 * provisioning uses it to check a device against one whose DS output was
 * verified in full. Same error codes as ds_sign(). */
#define DS_FINGERPRINT_LEN 32
int ds_params_fingerprint(const Efuse *efuse, unsigned key_block, const DsData *data,
                          uint8_t ret[DS_FINGERPRINT_LEN]);

/* A DS key as a device holds it: eFuse (borrowed), key block, DS data and
 * the public key from the device certificate. Caches whatever makes signing
 * fast (keyed on the decrypted parameters, so every call still goes through
 * the full HMAC/AES/MD/padding path and a tampered C still fails). */
typedef struct DsKey DsKey;
int ds_key_new(const Efuse *efuse, unsigned key_block, const DsData *data, EVP_PKEY *pub, DsKey **ret);
DsKey *ds_key_free(DsKey *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(DsKey *, ds_key_free);
unsigned ds_key_bits(const DsKey *k);
EVP_PKEY *ds_key_public(const DsKey *k);        /* borrowed */
/* Whether the in-memory CRT form was derived (p, q recovered from n, e, d).
 * Without it signing still works, through the plain X^Y mod M. */
bool ds_key_has_crt(const DsKey *k);
/* Raw RSA private operation, big-endian in and out, `len` = key bytes.
 * Same error codes as ds_sign(); out_be is zeroed on error. Does not modify
 * the DsKey, so concurrent calls are fine as long as the Efuse is not being
 * burned at the same time. */
int ds_key_sign_raw(DsKey *k, const uint8_t *in_be, size_t len, uint8_t *out_be);
