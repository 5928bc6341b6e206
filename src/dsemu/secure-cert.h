/* SPDX-License-Identifier: MIT */
#pragma once

/* The esp_secure_cert partition in TLV format (esp-formats.md §9), as
 * esp_secure_cert_mgr's tlv_format.generate_partition_rsa_ds() writes it:
 * DEV_CERT, CA_CERT, DS_DATA, DS_CONTEXT (in that order), each TLV =
 * header(12) ‖ value ‖ zero pad to 16 ‖ ESP-CRC(4); the rest of the
 * partition is erased flash (0xFF). PEM values carry their terminating NUL. */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "basic/macro.h"
#include "dsemu/ds.h"
#include "flash/flash.h"

#define SECURE_CERT_TLV_MAGIC 0xBA5EBA11u
#define SECURE_CERT_TLV_HEADER_LEN 12
#define SECURE_CERT_TLV_FOOTER_LEN 4
#define SECURE_CERT_PARTITION_SIZE 0x2000       /* usual size of the partition */
#define SECURE_CERT_DS_CONTEXT_LEN 8

/* TLV types (esp_secure_cert_tlv_config.h). Sparse: use the names. */
typedef enum SecureCertTlvType {
        SECURE_CERT_CA_CERT = 0,
        SECURE_CERT_DEV_CERT = 1,
        SECURE_CERT_PRIV_KEY = 2,
        SECURE_CERT_DS_DATA = 3,
        SECURE_CERT_DS_CONTEXT = 4,
        SECURE_CERT_HMAC_ECDSA_KEY_SALT = 5,
        SECURE_CERT_SEC_CFG = 6,
        SECURE_CERT_TEE_SEC_STORAGE_KEY = 7,
        SECURE_CERT_SIGNATURE_BLOCK = 8,
        SECURE_CERT_INTEGRITY = 9,
        SECURE_CERT_TLV_END = 50,
        SECURE_CERT_USER_DATA_1 = 51,
        SECURE_CERT_USER_DATA_2 = 52,
        SECURE_CERT_USER_DATA_3 = 53,
        SECURE_CERT_USER_DATA_4 = 54,
        SECURE_CERT_USER_DATA_5 = 55,
        _SECURE_CERT_TLV_TYPE_MAX = 256,
        _SECURE_CERT_TLV_TYPE_INVALID = -EINVAL,
} SecureCertTlvType;

/* "CA_CERT", "DEV_CERT", …; NULL for types without a name. */
const char *secure_cert_tlv_type_to_string(SecureCertTlvType t) _pure_;
SecureCertTlvType secure_cert_tlv_type_from_string(const char *s) _pure_;

/* One TLV; `value` points into the owning SecureCert. */
typedef struct SecureCertTlv {
        uint32_t offset;                /* of the header in the partition */
        uint8_t type;
        uint8_t subtype;
        uint8_t flags;
        const uint8_t *value;
        size_t len;
} SecureCertTlv;

/* ---- Writing ---- */

/* Appends one TLV at *pos of buf (advancing *pos). -ENOBUFS when it does not
 * fit, -EINVAL for a value longer than 65535 bytes. */
int secure_cert_tlv_append(uint8_t *buf, size_t size, size_t *pos,
                           uint8_t type, uint8_t subtype, uint8_t flags,
                           const void *value, size_t len);

/* DS_CONTEXT value (§9): 4 zero bytes, key block, 0, key bits LE16. */
void secure_cert_ds_context(unsigned key_block, unsigned key_bits, uint8_t out[SECURE_CERT_DS_CONTEXT_LEN]);

/* The whole partition image for an RSA DS device, byte-identical to
 * generate_partition_rsa_ds(): `out` (out_size bytes, usually
 * SECURE_CERT_PARTITION_SIZE) is filled with DEV_CERT, CA_CERT (skipped when
 * ca_pem is NULL), DS_DATA, DS_CONTEXT, then 0xFF. PEM strings are
 * NUL-terminated and stored with the NUL. Returns the bytes used by the TLVs. */
int secure_cert_build_rsa_ds(const char *dev_cert_pem, const char *ca_pem,
                             const DsData *ds, unsigned key_block, unsigned key_bits,
                             uint8_t *out, size_t out_size);

/* Erases the region and writes `len` bytes of image at its start. */
int secure_cert_write_region(const FlashRegion *r, const uint8_t *image, size_t len);

/* ---- Reading ---- */

typedef struct SecureCert SecureCert;

/* Parses all TLVs from offset 0 until the first header whose magic is not
 * 0xBA5EBA11 (erased flash). Each TLV's length and ESP-CRC footer are
 * checked: -EBADMSG with `err` naming the TLV (index, offset, type) and the
 * reason. -ENODATA when the partition holds no TLV at all. */
int secure_cert_parse(const uint8_t *data, size_t size, SecureCert **ret, char *err, size_t errlen);
int secure_cert_read_region(const FlashRegion *r, SecureCert **ret, char *err, size_t errlen);
SecureCert *secure_cert_free(SecureCert *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(SecureCert *, secure_cert_free);

size_t secure_cert_n_tlvs(const SecureCert *c);
const SecureCertTlv *secure_cert_tlv(const SecureCert *c, size_t i);           /* NULL past the end */
const SecureCertTlv *secure_cert_find(const SecureCert *c, SecureCertTlvType type, uint8_t subtype);

/* DEV_CERT/CA_CERT (subtype 0) as X509: PEM (with or without the NUL) or
 * DER. -ENOENT when absent, -EBADMSG when it does not parse. */
int secure_cert_get_x509(const SecureCert *c, SecureCertTlvType type, X509 **ret);
/* DS_DATA + DS_CONTEXT (subtype 0): the DS data for `chip`, key block and
 * key bits. -ENOENT when absent, -EBADMSG on wrong sizes, a key block > 5, or
 * key bits that disagree with DS_DATA's rsa_length. */
int secure_cert_get_ds(const SecureCert *c, EspChip chip, DsData *ret_data,
                       unsigned *ret_key_block, unsigned *ret_key_bits);
