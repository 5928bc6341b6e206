/* SPDX-License-Identifier: MIT */
#pragma once

/* The eFuse controller of ESP32-C3/S3 (esp-formats.md §2) and the HMAC
 * peripheral that reads keys from it.
 *
 * The model keeps the *real* value of every block (what the HMAC, DS,
 * XTS-AES and secure-boot hardware see) and derives the *software view*
 * from it: a key block whose RD_DIS bit is set reads as zeros through every
 * software path (efuse_read_key, efuse_field_get_raw, the CLI summary).
 *
 * Burning follows espefuse/the controller (§2.4): bits only go 0 -> 1, and a
 * burn into a write-disabled field or block is refused (nothing changes).
 *
 * Errors (negative errno, named by esp_err_to_name()):
 *   -ENOENT   unknown field name
 *   -ERANGE   value does not fit in the field, or bad block index
 *   -EPERM    value would clear a bit that is already burned (1 -> 0)
 *   -EACCES   field or block is write-disabled (WR_DIS)
 *   -EEXIST   key block is not empty (data, purpose or protection already burned)
 *   -EINVAL   purpose not valid for the chip/block (e.g. BLOCK_KEY5 + XTS quirk)
 *   -EBADMSG  eFuse file has the wrong size or holds garbage (see err)
 *   -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL  HMAC asked for a purpose the block does not have
 */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "basic/macro.h"

typedef enum EspChip {
        ESP_CHIP_ESP32C3,
        ESP_CHIP_ESP32S3,
        _ESP_CHIP_MAX,
        _ESP_CHIP_INVALID = -EINVAL,
} EspChip;

const char *esp_chip_to_string(EspChip c) _pure_;     /* "esp32c3", "esp32s3" */
EspChip esp_chip_from_string(const char *s) _pure_;
int esp_chip_image_id(EspChip c) _pure_;               /* app image chip id: 5 (C3), 9 (S3); -EINVAL */

/* KEY_PURPOSE_n values (§2.2). Names are espefuse's. */
typedef enum EfuseKeyPurpose {
        EFUSE_KEY_PURPOSE_USER = 0,
        EFUSE_KEY_PURPOSE_RESERVED = 1,
        EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1 = 2,       /* S3 only */
        EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2 = 3,       /* S3 only */
        EFUSE_KEY_PURPOSE_XTS_AES_128_KEY = 4,
        EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL = 5,
        EFUSE_KEY_PURPOSE_HMAC_DOWN_JTAG = 6,
        EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE = 7,
        EFUSE_KEY_PURPOSE_HMAC_UP = 8,
        EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0 = 9,
        EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST1 = 10,
        EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST2 = 11,
        _EFUSE_KEY_PURPOSE_MAX,
        _EFUSE_KEY_PURPOSE_INVALID = -EINVAL,
} EfuseKeyPurpose;

const char *efuse_key_purpose_to_string(EfuseKeyPurpose p) _pure_;
EfuseKeyPurpose efuse_key_purpose_from_string(const char *s) _pure_;
/* Whether the chip has this purpose at all (XTS_AES_256_KEY_1/2: S3 only). */
bool efuse_key_purpose_valid_for_chip(EspChip chip, EfuseKeyPurpose p) _pure_;
/* espefuse burn_key's default: read-protect HMAC and XTS keys, never USER,
 * RESERVED or SECURE_BOOT_DIGESTn (the ROM must read digests). */
bool efuse_key_purpose_read_protect_default(EfuseKeyPurpose p) _pure_;
/* XTS keys are stored byte-reversed by espefuse burn_key. */
bool efuse_key_purpose_reverses_key(EfuseKeyPurpose p) _pure_;

#define EFUSE_BLOCKS 11
#define EFUSE_KEY_BLOCKS 6               /* BLOCK_KEY0..5 = eFuse blocks 4..9 */
#define EFUSE_KEY_BLOCK_FIRST 4
#define EFUSE_KEY_LEN 32
#define EFUSE_MAC_LEN 6
#define EFUSE_FILE_SIZE 1024             /* QEMU eFuse file (§2.6) */
#define EFUSE_FILE_USED 336              /* 24 + 24 + 9*32 bytes of read registers */

typedef struct Efuse Efuse;

/* A blank eFuse of `chip`, with the chip revision bits QEMU's default image
 * carries (BLOCK1 byte 14 = 0x0C, WAFER_VERSION_MINOR_LO = 3). */
int efuse_new(EspChip chip, Efuse **ret);
Efuse *efuse_free(Efuse *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(Efuse *, efuse_free);
Efuse *efuse_dup(const Efuse *e);       /* NULL on OOM */
EspChip efuse_chip(const Efuse *e) _pure_;

/* QEMU eFuse file (§2.6): 1024 bytes; the read registers from BLOCK0 on, LE;
 * bytes 336..1023 zero. A wrong size, non-zero tail or an undefined key
 * purpose gives -EBADMSG with `err` naming the file and the reason; a missing
 * file gives -ENOENT. efuse_save writes atomically with mode 0600 (the file
 * holds read-protected keys). */
int efuse_load(const char *path, EspChip chip, Efuse **ret, char *err, size_t errlen);
int efuse_save(const Efuse *e, const char *path);
/* The same 1024 bytes in memory. */
int efuse_from_bytes(EspChip chip, const uint8_t *data, size_t len, Efuse **ret, char *err, size_t errlen);
void efuse_to_bytes(const Efuse *e, uint8_t out[EFUSE_FILE_SIZE]);

/* espefuse burn_key BLOCK_KEY<key_block> (key_block 0..5):
 *  - refused with -EEXIST unless the block is empty (no data, purpose USER,
 *    not read/write protected);
 *  - -EINVAL for a purpose the chip lacks, RESERVED, or an XTS purpose on
 *    BLOCK_KEY5 (SOC_EFUSE_BLOCK9_KEY_PURPOSE_QUIRK);
 *  - -EACCES if KEY_PURPOSE_<n> or the block is write-disabled;
 *  - XTS keys are stored byte-reversed, like espefuse;
 *  - burns KEY_PURPOSE_<n>, then write-protects the block and KEY_PURPOSE_<n>
 *    (WR_DIS bits 23+n and 8+n), as burn_key does without --no-write-protect;
 *  - read-protects (RD_DIS bit n) when `read_protect` is true, except for
 *    purposes espefuse never read-protects (USER, RESERVED, SECURE_BOOT_DIGESTn),
 *    where the flag is ignored. Pass efuse_key_purpose_read_protect_default(p)
 *    for espefuse's default, false for --no-read-protect. */
int efuse_burn_key(Efuse *e, unsigned key_block, const uint8_t key[EFUSE_KEY_LEN],
                   EfuseKeyPurpose purpose, bool read_protect);
/* Software view of BLOCK_KEY<key_block>: zeros when read-protected. */
int efuse_read_key(const Efuse *e, unsigned key_block, uint8_t out[EFUSE_KEY_LEN]);
EfuseKeyPurpose efuse_key_purpose(const Efuse *e, unsigned key_block);  /* -EINVAL on bad index */
bool efuse_key_is_readable(const Efuse *e, unsigned key_block);
bool efuse_key_is_writeable(const Efuse *e, unsigned key_block);
/* Real data all zero and purpose USER (what the hardware sees). */
bool efuse_key_block_is_empty(const Efuse *e, unsigned key_block);
/* First key block with this purpose, or -ENOENT. */
int efuse_find_key_block(const Efuse *e, EfuseKeyPurpose purpose);

/* The HMAC peripheral (§2.2, §1.1): HMAC-SHA256 keyed with the real 32 bytes
 * of BLOCK_KEY<key_block>, even when read-protected. `purpose` is the mode
 * requested: HMAC_UP (upstream, result to software), HMAC_DOWN_DIGITAL_SIGNATURE
 * (DS; the block may also be HMAC_DOWN_ALL, as on silicon), HMAC_DOWN_JTAG
 * (or HMAC_DOWN_ALL). Any other block purpose -> -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL.
 * -EINVAL for a bad block or a purpose that is not an HMAC mode. */
int efuse_hmac(const Efuse *e, unsigned key_block, EfuseKeyPurpose purpose,
               const void *msg, size_t len, uint8_t mac[32]);

/* BLOCK1 MAC, stored byte-reversed (§2.1). efuse_set_mac burns it (bits only
 * 0 -> 1: -EPERM if another MAC is already there, -EACCES if BLOCK1 is
 * write-disabled). mac[0] is the OUI's first octet. */
int efuse_set_mac(Efuse *e, const uint8_t mac[EFUSE_MAC_LEN]);
void efuse_get_mac(const Efuse *e, uint8_t mac[EFUSE_MAC_LEN]);

/* Named fields (BLOCK0 fields of §2.3, MAC, key blocks). Values up to 64
 * bits; key blocks are read with efuse_read_key/efuse_field_get_raw.
 * efuse_burn_field: `value` is the field's new value and must keep every bit
 * already burned (-EPERM otherwise: bits only go 0 -> 1); for the bitmaps
 * WR_DIS and RD_DIS, `value` lists bits to add. Also -ENOENT, -ERANGE,
 * -E2BIG (field wider than 64 bits), -EACCES (write-disabled). `err` (may be
 * NULL) gets a message naming the field and the reason. Burning the value
 * the field already has is a no-op success. */
int efuse_burn_field(Efuse *e, const char *name, uint64_t value);
int efuse_burn_field_full(Efuse *e, const char *name, uint64_t value, char *err, size_t errlen);
/* Software view (0 for read-protected blocks). -ENOENT, -E2BIG for fields > 64 bits. */
int efuse_get_field(const Efuse *e, const char *name, uint64_t *ret);

/* Secure boot and anti-rollback helpers (§2.3, §7.3). */
unsigned efuse_secure_version(const Efuse *e);                  /* popcount of SECURE_VERSION */
int efuse_burn_secure_version(Efuse *e, unsigned v);            /* burns only the new bits; v <= 16; never lowers */
bool efuse_secure_boot_enabled(const Efuse *e);
bool efuse_flash_encryption_enabled(const Efuse *e);            /* odd popcount of SPI_BOOT_CRYPT_CNT */
/* Digest slots 0..2: present[i] when some key block has purpose
 * SECURE_BOOT_DIGEST<i> and SECURE_BOOT_KEY_REVOKE<i> is not set. Returns the
 * number of present slots. */
int efuse_secure_boot_digests(const Efuse *e, uint8_t digests[3][32], bool present[3]);
int efuse_revoke_secure_boot_digest(Efuse *e, unsigned slot);

/* ---- Field table, for summaries (§2.5) ---- */

typedef enum EfuseFieldType {
        EFUSE_FIELD_BOOL,       /* 1 bit, True/False */
        EFUSE_FIELD_UINT,       /* plain number */
        EFUSE_FIELD_BITMAP,     /* WR_DIS, RD_DIS: shown as a number */
        EFUSE_FIELD_PURPOSE,    /* KEY_PURPOSE_n: enum name */
        EFUSE_FIELD_CRYPT_CNT,  /* SPI_BOOT_CRYPT_CNT: Enable/Disable by popcount */
        EFUSE_FIELD_SOFT_DIS,   /* SOFT_DIS_JTAG: odd popcount = disabled */
        EFUSE_FIELD_THERMO,     /* SECURE_VERSION: popcount */
        EFUSE_FIELD_MAC,        /* 48-bit MAC, byte-reversed */
        EFUSE_FIELD_KEY,        /* 256-bit key block */
        _EFUSE_FIELD_TYPE_MAX,
        _EFUSE_FIELD_TYPE_INVALID = -EINVAL,
} EfuseFieldType;

typedef struct EfuseFieldInfo {
        const char *name;               /* espefuse name */
        unsigned block;                 /* 0..10 */
        unsigned start;                 /* bit index in the block's LE words */
        unsigned len;                   /* bits */
        int wr_dis_bit;                 /* WR_DIS bit guarding it, -1 for none */
        int rd_dis_bit;                 /* RD_DIS bit hiding it, -1 for none */
        EfuseFieldType type;
        const char *category;           /* "security", "jtag", "mac", … */
        const char *description;
} EfuseFieldInfo;

size_t efuse_field_count(EspChip chip);
const EfuseFieldInfo *efuse_field_by_index(EspChip chip, size_t i);     /* NULL past the end */
const EfuseFieldInfo *efuse_field_by_name(EspChip chip, const char *name);
bool efuse_field_is_readable(const Efuse *e, const EfuseFieldInfo *f);
bool efuse_field_is_writeable(const Efuse *e, const EfuseFieldInfo *f);
/* Software-view bits of the field, LE (bit 0 of the field = bit 0 of out[0]),
 * (len+7)/8 bytes; zeros when not readable. -ENOBUFS if out_size is short. */
int efuse_field_get_raw(const Efuse *e, const EfuseFieldInfo *f, uint8_t *out, size_t out_size);
/* espefuse's "meaningful value": True/False, a number, a purpose name,
 * Enable/Disable, a MAC "aa:bb:…", or key bytes as hex separated by spaces.
 * An unreadable all-zero key shows "?" per byte, like espefuse. */
int efuse_field_format_value(const Efuse *e, const EfuseFieldInfo *f, char *buf, size_t size);
