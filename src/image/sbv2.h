/* SPDX-License-Identifier: MIT */
#pragma once

/* Secure Boot V2 signature sectors (esp-formats.md §6.1): RSA-3072 PSS blocks
 * (version 2) and ECDSA P-256 blocks (version 3), as espsecure writes them.
 *
 * A signed file = data padded with 0xFF to 4 KiB, then one 4 KiB sector with
 * 1–3 consecutive 1216-byte blocks, the rest 0xFF. Every block signs the
 * SHA-256 of everything before the sector.
 *
 * Errors (negative; a message goes to err when given):
 *   -ESP_ERR_IMAGE_INVALID   malformed block/sector/file, digest mismatch
 *   -ESP_ERR_INVALID_CRC     a block with the magic but a wrong CRC
 *   -ENOKEY                  no block carries a trusted key
 *   -EBADMSG                 a trusted key's signature does not verify
 *   -EOPNOTSUPP              a key that is neither RSA-3072 nor EC P-256,
 *                            or a block scheme we do not implement (P-384, P-192)
 *   -E2BIG                   already 3 blocks */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <errno.h>
#include <openssl/evp.h>

#define SBV2_SECTOR_SIZE 4096u
#define SBV2_BLOCK_SIZE 1216u
#define SBV2_MAX_BLOCKS 3u
#define SBV2_MAGIC 0xE7
#define SBV2_VERSION_RSA 0x02
#define SBV2_VERSION_ECDSA 0x03
#define SBV2_DIGEST_LEN 32u
#define SBV2_KEY_DIGEST_LEN 32u
#define SBV2_CRC_OFFSET 1196u

typedef enum Sbv2KeyType {
        SBV2_KEY_RSA3072,       /* block version 2, RSA-PSS SHA-256 */
        SBV2_KEY_ECDSA256,      /* block version 3, ECDSA P-256 SHA-256 */
        _SBV2_KEY_TYPE_MAX,
        _SBV2_KEY_TYPE_INVALID = -EINVAL,
} Sbv2KeyType;

const char *sbv2_key_type_to_string(Sbv2KeyType t);     /* "rsa3072", "ecdsa256" */
Sbv2KeyType sbv2_key_type_from_string(const char *s);

/* One decoded block. */
typedef struct Sbv2Block {
        Sbv2KeyType type;
        uint8_t version;                        /* 2 or 3 */
        uint8_t image_digest[SBV2_DIGEST_LEN];  /* what it claims to sign */
        uint8_t key_digest[SBV2_KEY_DIGEST_LEN];/* eFuse SECURE_BOOT_DIGESTn of its key */
        uint32_t crc;                           /* stored = computed (checked) */
        uint8_t raw[SBV2_BLOCK_SIZE];
} Sbv2Block;

/* --- keys --- */

/* The type of a key (public or private); -EOPNOTSUPP with a message when it
 * is not RSA-3072 or EC P-256. */
int sbv2_key_type(EVP_PKEY *key, char *err, size_t errlen);

/* A fresh signing key (RSA-3072, e = 65537; or EC P-256). */
int sbv2_generate_key(Sbv2KeyType type, EVP_PKEY **ret);

/* Loads a PEM key: a private key, or (want_private = false) also a public key
 * or certificate-less "PUBLIC KEY" block. Checks the type is usable.
 * Errors name the file. */
int sbv2_load_key(const char *path, bool want_private, EVP_PKEY **ret, char *err, size_t errlen);

/* Writes the private key as PKCS#8 PEM, mode 0600, atomically. */
int sbv2_save_private_key(EVP_PKEY *key, const char *path);
/* Writes the public half as "PUBLIC KEY" PEM, mode 0644. */
int sbv2_save_public_key(EVP_PKEY *key, const char *path);

/* The eFuse key digest (§6.1) of a key's public half: RSA = SHA-256 of n, e,
 * R, M′ as encoded in a block (776 bytes); ECDSA = SHA-256 of curve id ‖ X ‖ Y
 * (little-endian). */
int sbv2_key_digest(EVP_PKEY *key, uint8_t ret[SBV2_KEY_DIGEST_LEN]);

/* --- blocks --- */

/* Makes one signature block for image_digest (= SHA-256 of the data before
 * the sector). RSA-PSS is randomised; ECDSA too. */
int sbv2_sign_digest(EVP_PKEY *key, const uint8_t image_digest[SBV2_DIGEST_LEN], uint8_t ret_block[SBV2_BLOCK_SIZE]);

/* Decodes a block: magic, version, CRC, curve; computes its key digest. */
int sbv2_parse_block(const uint8_t *raw, size_t len, Sbv2Block *ret, char *err, size_t errlen);

/* The block's public key. */
int sbv2_block_public_key(const Sbv2Block *b, EVP_PKEY **ret);

/* Checks that the block's digest equals image_digest and that its signature
 * verifies with its own embedded key. Does not judge whether the key is trusted. */
int sbv2_block_verify(const Sbv2Block *b, const uint8_t image_digest[SBV2_DIGEST_LEN], char *err, size_t errlen);

/* Decodes the blocks of a 4 KiB sector (stops at the first slot without the
 * magic). Returns the number of blocks (1..3), or an error: no block at all
 * (-ESP_ERR_IMAGE_INVALID), a bad CRC or malformed block. */
int sbv2_parse_sector(const uint8_t *sector, size_t len, Sbv2Block ret[SBV2_MAX_BLOCKS], char *err, size_t errlen);

/* --- verification (works on a precomputed digest: streaming friendly) --- */

/* The bootloader's check: accepted if some block's key digest is in
 * trusted[0..n_trusted) (the non-revoked eFuse digests) and that block
 * verifies over image_digest. *ret_block (optional) = index of that block. */
int sbv2_verify_sector(const uint8_t *sector, size_t len, const uint8_t image_digest[SBV2_DIGEST_LEN],
                       const uint8_t (*trusted)[SBV2_KEY_DIGEST_LEN], size_t n_trusted,
                       unsigned *ret_block, char *err, size_t errlen);

/* "Signed apps without hardware secure boot" (§6.2): the trusted key is the
 * key digest of the FIRST block of the running app's sector. */
int sbv2_sector_first_key_digest(const uint8_t *sector, size_t len, uint8_t ret[SBV2_KEY_DIGEST_LEN],
                                 char *err, size_t errlen);

/* --- whole files (espsecure sign-data / verify-signature) --- */

/* True when the last 4 KiB of data (len a multiple of 4 KiB, at least two
 * sectors) is a signature sector that sbv2_parse_sector() accepts: at least
 * one block, and every block before the first slot without the magic well
 * formed. A sector whose second block is broken is not "signed" here, even
 * though sbv2_verify_file() (like the bootloader) may accept it through its
 * first block. */
bool sbv2_file_is_signed(const uint8_t *data, size_t len);

/* Signs a file: pads with 0xFF to 4 KiB and appends a sector with one block;
 * when the file is already signed (sbv2_file_is_signed), appends this block to
 * its sector instead (-E2BIG at 3 blocks; the existing blocks must sign the
 * same data). Returns a new buffer. */
int sbv2_sign_file(EVP_PKEY *key, const uint8_t *data, size_t len, uint8_t **ret, size_t *ret_len,
                   char *err, size_t errlen);

/* Verifies a signed file (sector = its last 4 KiB) against trusted key digests. */
int sbv2_verify_file(const uint8_t *data, size_t len, const uint8_t (*trusted)[SBV2_KEY_DIGEST_LEN],
                     size_t n_trusted, unsigned *ret_block, char *err, size_t errlen);
