/* SPDX-License-Identifier: MIT */

#define LOG_TOPIC LOG_TOPIC_DSEMU

#include <inttypes.h>
#include <stdarg.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "basic/errmsg.h"
#include "basic/esp-err.h"
#include "basic/fileio.h"
#include "basic/log.h"
#include "basic/secret-mem.h"
#include "basic/string-table.h"
#include "dsemu/efuse.h"

/* Bytes of each block as held by the read registers (§2.1): BLOCK0 and
 * BLOCK1 are 6 words, the others 8. */
#define BLOCK_BYTES(b) ((b) <= 1 ? 24u : 32u)

/* BLOCK0 bit positions used directly (§2.3). */
#define WR_DIS_START 0
#define RD_DIS_START 32
#define WR_DIS_RD_DIS 0                 /* WR_DIS bit guarding RD_DIS */
#define WR_DIS_KEY_PURPOSE(n) (8 + (n))
#define WR_DIS_BLOCK(b) (20 + (b) - 1)  /* BLOCK1..10 -> bits 20..29 */
#define RD_DIS_BLOCK(b) ((b) - EFUSE_KEY_BLOCK_FIRST) /* BLOCK4..10 -> bits 0..6 */
#define KEY_PURPOSE_START(n) ((n) < 2 ? 88 + 4 * (n) : 96 + 4 * ((n) - 2))

struct Efuse {
        EspChip chip;
        /* Real values, LE: bit i of a block = bit (i % 8) of byte i / 8. */
        uint8_t blocks[EFUSE_BLOCKS][32];
};

static const char *const esp_chip_table[_ESP_CHIP_MAX] = {
        [ESP_CHIP_ESP32C3] = "esp32c3",
        [ESP_CHIP_ESP32S3] = "esp32s3",
};
DEFINE_STRING_TABLE_LOOKUP(esp_chip, EspChip);

int esp_chip_image_id(EspChip c) {
        switch (c) {
        case ESP_CHIP_ESP32C3:
                return 5;
        case ESP_CHIP_ESP32S3:
                return 9;
        case _ESP_CHIP_MAX:
        case _ESP_CHIP_INVALID:
                break;
        }
        return -EINVAL;
}

static const char *const efuse_key_purpose_table[_EFUSE_KEY_PURPOSE_MAX] = {
        [EFUSE_KEY_PURPOSE_USER] = "USER",
        [EFUSE_KEY_PURPOSE_RESERVED] = "RESERVED",
        [EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1] = "XTS_AES_256_KEY_1",
        [EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2] = "XTS_AES_256_KEY_2",
        [EFUSE_KEY_PURPOSE_XTS_AES_128_KEY] = "XTS_AES_128_KEY",
        [EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL] = "HMAC_DOWN_ALL",
        [EFUSE_KEY_PURPOSE_HMAC_DOWN_JTAG] = "HMAC_DOWN_JTAG",
        [EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE] = "HMAC_DOWN_DIGITAL_SIGNATURE",
        [EFUSE_KEY_PURPOSE_HMAC_UP] = "HMAC_UP",
        [EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0] = "SECURE_BOOT_DIGEST0",
        [EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST1] = "SECURE_BOOT_DIGEST1",
        [EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST2] = "SECURE_BOOT_DIGEST2",
};
DEFINE_STRING_TABLE_LOOKUP(efuse_key_purpose, EfuseKeyPurpose);

static bool purpose_is_xts(EfuseKeyPurpose p) {
        return p == EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1 || p == EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2 ||
                p == EFUSE_KEY_PURPOSE_XTS_AES_128_KEY;
}

bool efuse_key_purpose_valid_for_chip(EspChip chip, EfuseKeyPurpose p) {
        if ((int) p < 0 || p >= _EFUSE_KEY_PURPOSE_MAX || (int) chip < 0 || chip >= _ESP_CHIP_MAX)
                return false;
        /* XTS-AES-256 key halves exist on S3 only (§2.2). */
        if (p == EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1 || p == EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2)
                return chip == ESP_CHIP_ESP32S3;
        return true;
}

bool efuse_key_purpose_read_protect_default(EfuseKeyPurpose p) {
        switch (p) {
        case EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_1:
        case EFUSE_KEY_PURPOSE_XTS_AES_256_KEY_2:
        case EFUSE_KEY_PURPOSE_XTS_AES_128_KEY:
        case EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL:
        case EFUSE_KEY_PURPOSE_HMAC_DOWN_JTAG:
        case EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE:
        case EFUSE_KEY_PURPOSE_HMAC_UP:
                return true;
        case EFUSE_KEY_PURPOSE_USER:
        case EFUSE_KEY_PURPOSE_RESERVED:
        case EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0:
        case EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST1:
        case EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST2:
        case _EFUSE_KEY_PURPOSE_MAX:
        case _EFUSE_KEY_PURPOSE_INVALID:
                break;
        }
        return false;
}

bool efuse_key_purpose_reverses_key(EfuseKeyPurpose p) {
        return purpose_is_xts(p);
}

/* ---- Field table (§2.3; names and categories as espefuse) ---- */

#define F(n, b, s, l, w, r, t, c, d) \
        { .name = n, .block = b, .start = s, .len = l, .wr_dis_bit = w, .rd_dis_bit = r, \
          .type = EFUSE_FIELD_##t, .category = c, .description = d }

#define KEY_PURPOSE_FIELD(n) \
        F("KEY_PURPOSE_" #n, 0, KEY_PURPOSE_START(n), 4, WR_DIS_KEY_PURPOSE(n), -1, PURPOSE, "security", \
          "Represents the purpose of Key" #n)
#define KEY_BLOCK_FIELD(n) \
        F("BLOCK_KEY" #n, EFUSE_KEY_BLOCK_FIRST + (n), 0, 256, WR_DIS_BLOCK(EFUSE_KEY_BLOCK_FIRST + (n)), (n), \
          KEY, "security", "Key" #n " or user data")

/* Fields shared by both chips, in block/bit order. DIS_USB_JTAG and
 * ERR_RST_ENABLE differ and are added per chip below. */
#define COMMON_BLOCK0_HEAD                                                                                     \
        F("WR_DIS", 0, WR_DIS_START, 32, -1, -1, BITMAP, "security", "Disable programming of individual eFuses"), \
        F("RD_DIS", 0, RD_DIS_START, 7, WR_DIS_RD_DIS, -1, BITMAP, "security",                                 \
          "Disable reading from BlOCK4-10")

#define COMMON_BLOCK0_TAIL                                                                                      \
        F("SOFT_DIS_JTAG", 0, 48, 3, 31, -1, SOFT_DIS, "jtag",                                                  \
          "Set these bits to disable JTAG in the soft way (odd number 1 means disable)"),                      \
        F("DIS_PAD_JTAG", 0, 51, 1, 2, -1, BOOL, "jtag", "Set this bit to disable JTAG in the hard way"),      \
        F("DIS_DOWNLOAD_MANUAL_ENCRYPT", 0, 52, 1, 2, -1, BOOL, "security",                                    \
          "Set this bit to disable flash encryption when in download boot modes"),                            \
        F("SPI_BOOT_CRYPT_CNT", 0, 82, 3, 4, -1, CRYPT_CNT, "security",                                        \
          "Enables flash encryption when 1 or 3 bits are set and disables otherwise"),                        \
        F("SECURE_BOOT_KEY_REVOKE0", 0, 85, 1, 5, -1, BOOL, "security", "Revoke 1st secure boot key"),         \
        F("SECURE_BOOT_KEY_REVOKE1", 0, 86, 1, 6, -1, BOOL, "security", "Revoke 2nd secure boot key"),         \
        F("SECURE_BOOT_KEY_REVOKE2", 0, 87, 1, 7, -1, BOOL, "security", "Revoke 3rd secure boot key"),         \
        KEY_PURPOSE_FIELD(0), KEY_PURPOSE_FIELD(1), KEY_PURPOSE_FIELD(2),                                      \
        KEY_PURPOSE_FIELD(3), KEY_PURPOSE_FIELD(4), KEY_PURPOSE_FIELD(5),                                      \
        F("SECURE_BOOT_EN", 0, 116, 1, 15, -1, BOOL, "security", "Set this bit to enable secure boot"),       \
        F("SECURE_BOOT_AGGRESSIVE_REVOKE", 0, 117, 1, 16, -1, BOOL, "security",                                \
          "Set this bit to enable revoking aggressive secure boot"),                                          \
        F("FLASH_TPUW", 0, 124, 4, 18, -1, UINT, "flash",                                                      \
          "Configures flash waiting time after power-up; in unit of ms"),                                     \
        F("DIS_DOWNLOAD_MODE", 0, 128, 1, 18, -1, BOOL, "security",                                            \
          "Set this bit to disable download mode (boot_mode[3:0] = 0, 1, 2, 3, 6, 7)"),                      \
        F("ENABLE_SECURITY_DOWNLOAD", 0, 133, 1, 18, -1, BOOL, "security",                                     \
          "Set this bit to enable secure UART download mode"),                                                \
        F("SECURE_VERSION", 0, 142, 16, 18, -1, THERMO, "identity",                                            \
          "Secure version (used by ESP-IDF anti-rollback feature)")

#define COMMON_OTHER_BLOCKS                                                                                     \
        F("MAC", 1, 0, 48, WR_DIS_BLOCK(1), -1, MAC, "mac", "MAC address"),                                    \
        F("BLOCK_USR_DATA", 3, 0, 256, WR_DIS_BLOCK(3), -1, KEY, "user", "User data"),                         \
        KEY_BLOCK_FIELD(0), KEY_BLOCK_FIELD(1), KEY_BLOCK_FIELD(2),                                            \
        KEY_BLOCK_FIELD(3), KEY_BLOCK_FIELD(4), KEY_BLOCK_FIELD(5),                                            \
        F("BLOCK_SYS_DATA2", 10, 0, 256, WR_DIS_BLOCK(10), 6, KEY, "sys_data", "System data part 2 (reserved)")

static const EfuseFieldInfo fields_c3[] = {
        COMMON_BLOCK0_HEAD,
        F("DIS_USB_JTAG", 0, 41, 1, 2, -1, BOOL, "jtag", "Set this bit to disable function of usb switch to jtag"),
        COMMON_BLOCK0_TAIL,
        F("ERR_RST_ENABLE", 0, 159, 1, 19, -1, BOOL, "config",
          "Use BLOCK0 to check error record registers"),
        COMMON_OTHER_BLOCKS,
};

static const EfuseFieldInfo fields_s3[] = {
        COMMON_BLOCK0_HEAD,
        COMMON_BLOCK0_TAIL,
        F("DIS_USB_JTAG", 0, 118, 1, 2, -1, BOOL, "jtag", "Set this bit to disable function of usb switch to jtag"),
        COMMON_OTHER_BLOCKS,
};

static const EfuseFieldInfo *chip_fields(EspChip chip, size_t *n) {
        switch (chip) {
        case ESP_CHIP_ESP32C3:
                *n = ELEMENTSOF(fields_c3);
                return fields_c3;
        case ESP_CHIP_ESP32S3:
                *n = ELEMENTSOF(fields_s3);
                return fields_s3;
        case _ESP_CHIP_MAX:
        case _ESP_CHIP_INVALID:
                break;
        }
        *n = 0;
        return NULL;
}

size_t efuse_field_count(EspChip chip) {
        size_t n;
        chip_fields(chip, &n);
        return n;
}

const EfuseFieldInfo *efuse_field_by_index(EspChip chip, size_t i) {
        size_t n;
        const EfuseFieldInfo *t = chip_fields(chip, &n);
        return i < n ? &t[i] : NULL;
}

const EfuseFieldInfo *efuse_field_by_name(EspChip chip, const char *name) {
        size_t n;
        const EfuseFieldInfo *t = chip_fields(chip, &n);

        if (!name)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (strcasecmp(t[i].name, name) == 0)
                        return &t[i];
        return NULL;
}

/* ---- Bit access ---- */

static bool bit_get(const uint8_t *block, unsigned bit) {
        return block[bit / 8] & (1u << (bit % 8));
}

static uint64_t bits_get(const uint8_t *block, unsigned start, unsigned len) {
        uint64_t v = 0;
        for (unsigned i = 0; i < len && i < 64; i++)
                if (bit_get(block, start + i))
                        v |= UINT64_C(1) << i;
        return v;
}

static void bits_or(uint8_t *block, unsigned start, unsigned len, uint64_t v) {
        for (unsigned i = 0; i < len && i < 64; i++)
                if (v & (UINT64_C(1) << i))
                        block[(start + i) / 8] |= (uint8_t) (1u << ((start + i) % 8));
}

static bool wr_disabled(const Efuse *e, int wr_dis_bit) {
        return wr_dis_bit >= 0 && bit_get(e->blocks[0], WR_DIS_START + (unsigned) wr_dis_bit);
}

static bool rd_disabled(const Efuse *e, int rd_dis_bit) {
        return rd_dis_bit >= 0 && bit_get(e->blocks[0], RD_DIS_START + (unsigned) rd_dis_bit);
}

static bool mem_is_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

/* ---- Object ---- */

int efuse_new(EspChip chip, Efuse **ret) {
        Efuse *e;

        if ((int) chip < 0 || chip >= _ESP_CHIP_MAX || !ret)
                return -EINVAL;
        e = secret_alloc0(sizeof(*e));  /* key blocks: out of core dumps */
        if (!e)
                return -ENOMEM;
        e->chip = chip;
        /* QEMU's default image (§2.6): file byte 38 = BLOCK1 byte 14 = 0x0C,
         * WAFER_VERSION_MINOR_LO = 3, i.e. chip revision v0.3. */
        e->blocks[1][14] = 0x0C;
        *ret = e;
        return 0;
}

Efuse *efuse_free(Efuse *e) {
        secret_free(e, sizeof(*e));
        return NULL;
}

Efuse *efuse_dup(const Efuse *e) {
        Efuse *d;

        if (!e)
                return NULL;
        d = secret_alloc0(sizeof(*d));
        if (d)
                memcpy(d, e, sizeof(*d));
        return d;
}

EspChip efuse_chip(const Efuse *e) {
        return e ? e->chip : _ESP_CHIP_INVALID;
}

static size_t block_file_offset(unsigned b) {
        return b == 0 ? 0 : b == 1 ? 24 : 48 + 32 * (b - 2);
}

static int efuse_from_bytes_named(EspChip chip, const uint8_t *data, size_t len, const char *what,
                                  Efuse **ret, char *err, size_t errlen) {
        _cleanup_(efuse_freep) Efuse *e = NULL;
        int r;

        if (len != EFUSE_FILE_SIZE) {
                (void) errf(err, errlen, 0, "%s: eFuse file must be %d bytes (QEMU format), got %zu",
                        what, EFUSE_FILE_SIZE, len);
                return -EBADMSG;
        }
        for (size_t i = EFUSE_FILE_USED; i < len; i++)
                if (data[i]) {
                        (void) errf(err, errlen, 0,
                                "%s: byte %zu is 0x%02x, but bytes %d..%d of a QEMU eFuse file must be zero",
                                what, i, data[i], EFUSE_FILE_USED, EFUSE_FILE_SIZE - 1);
                        return -EBADMSG;
                }

        r = efuse_new(chip, &e);
        if (r < 0)
                return r;
        for (unsigned b = 0; b < EFUSE_BLOCKS; b++) {
                memset(e->blocks[b], 0, sizeof(e->blocks[b]));
                memcpy(e->blocks[b], data + block_file_offset(b), BLOCK_BYTES(b));
        }

        /* Undefined purpose values 12..15 and purposes the chip lacks are
         * what random data or a file of the other chip looks like. */
        for (unsigned n = 0; n < EFUSE_KEY_BLOCKS; n++) {
                unsigned p = (unsigned) bits_get(e->blocks[0], KEY_PURPOSE_START(n), 4);
                if (!efuse_key_purpose_valid_for_chip(chip, (EfuseKeyPurpose) p)) {
                        (void) errf(err, errlen, 0, "%s: KEY_PURPOSE_%u holds %u, not a key purpose of %s",
                                what, n, p, esp_chip_to_string(chip));
                        return -EBADMSG;
                }
        }

        *ret = TAKE_PTR(e);
        return 0;
}

int efuse_from_bytes(EspChip chip, const uint8_t *data, size_t len, Efuse **ret, char *err, size_t errlen) {
        if ((int) chip < 0 || chip >= _ESP_CHIP_MAX || !data || !ret)
                return -EINVAL;
        return efuse_from_bytes_named(chip, data, len, "eFuse data", ret, err, errlen);
}

int efuse_load(const char *path, EspChip chip, Efuse **ret, char *err, size_t errlen) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size;
        int r;

        if (!path || (int) chip < 0 || chip >= _ESP_CHIP_MAX || !ret)
                return -EINVAL;
        r = read_full_file(path, EFUSE_FILE_SIZE, &data, &size);
        if (r == -EFBIG) {
                (void) errf(err, errlen, 0, "%s: eFuse file must be %d bytes (QEMU format), file is larger",
                        path, EFUSE_FILE_SIZE);
                return -EBADMSG;
        }
        if (r < 0) {
                (void) errf(err, errlen, 0, "%s: cannot read eFuse file: %s", path, strerror(-r));
                return r;
        }
        r = efuse_from_bytes_named(chip, data, size, path, ret, err, errlen);
        explicit_bzero(data, size);
        return r;
}

void efuse_to_bytes(const Efuse *e, uint8_t out[EFUSE_FILE_SIZE]) {
        memset(out, 0, EFUSE_FILE_SIZE);
        for (unsigned b = 0; b < EFUSE_BLOCKS; b++)
                memcpy(out + block_file_offset(b), e->blocks[b], BLOCK_BYTES(b));
}

int efuse_save(const Efuse *e, const char *path) {
        uint8_t buf[EFUSE_FILE_SIZE];
        int r;

        if (!e || !path)
                return -EINVAL;
        efuse_to_bytes(e, buf);
        r = write_file_atomic(path, buf, sizeof(buf), 0600);
        explicit_bzero(buf, sizeof(buf));
        return r;
}

/* ---- Keys ---- */

static bool key_block_ok(unsigned key_block) {
        return key_block < EFUSE_KEY_BLOCKS;
}

EfuseKeyPurpose efuse_key_purpose(const Efuse *e, unsigned key_block) {
        if (!e || !key_block_ok(key_block))
                return _EFUSE_KEY_PURPOSE_INVALID;
        return (EfuseKeyPurpose) bits_get(e->blocks[0], KEY_PURPOSE_START(key_block), 4);
}

bool efuse_key_is_readable(const Efuse *e, unsigned key_block) {
        return e && key_block_ok(key_block) && !rd_disabled(e, (int) key_block);
}

bool efuse_key_is_writeable(const Efuse *e, unsigned key_block) {
        return e && key_block_ok(key_block) &&
                !wr_disabled(e, WR_DIS_BLOCK(EFUSE_KEY_BLOCK_FIRST + key_block));
}

bool efuse_key_block_is_empty(const Efuse *e, unsigned key_block) {
        return e && key_block_ok(key_block) &&
                mem_is_zero(e->blocks[EFUSE_KEY_BLOCK_FIRST + key_block], EFUSE_KEY_LEN) &&
                efuse_key_purpose(e, key_block) == EFUSE_KEY_PURPOSE_USER;
}

int efuse_find_key_block(const Efuse *e, EfuseKeyPurpose purpose) {
        if (!e)
                return -EINVAL;
        for (unsigned n = 0; n < EFUSE_KEY_BLOCKS; n++)
                if (efuse_key_purpose(e, n) == purpose &&
                    !mem_is_zero(e->blocks[EFUSE_KEY_BLOCK_FIRST + n], EFUSE_KEY_LEN))
                        return (int) n;
        return -ENOENT;
}

int efuse_read_key(const Efuse *e, unsigned key_block, uint8_t out[EFUSE_KEY_LEN]) {
        if (!e || !out)
                return -EINVAL;
        if (!key_block_ok(key_block))
                return -ERANGE;
        if (efuse_key_is_readable(e, key_block))
                memcpy(out, e->blocks[EFUSE_KEY_BLOCK_FIRST + key_block], EFUSE_KEY_LEN);
        else
                memset(out, 0, EFUSE_KEY_LEN);
        return 0;
}

int efuse_burn_key(Efuse *e, unsigned key_block, const uint8_t key[EFUSE_KEY_LEN],
                   EfuseKeyPurpose purpose, bool read_protect) {
        unsigned b = EFUSE_KEY_BLOCK_FIRST + key_block;
        uint8_t *blk;

        if (!e || !key)
                return -EINVAL;
        if (!key_block_ok(key_block))
                return -ERANGE;
        if (!efuse_key_purpose_valid_for_chip(e->chip, purpose) || purpose == EFUSE_KEY_PURPOSE_RESERVED)
                return -EINVAL;
        /* SOC_EFUSE_BLOCK9_KEY_PURPOSE_QUIRK: BLOCK_KEY5 cannot hold an XTS key (§2.2). */
        if (key_block == 5 && purpose_is_xts(purpose))
                return -EINVAL;

        if (!efuse_key_block_is_empty(e, key_block) || rd_disabled(e, (int) key_block))
                return -EEXIST;
        if (wr_disabled(e, WR_DIS_BLOCK(b)) || wr_disabled(e, WR_DIS_KEY_PURPOSE(key_block)))
                return -EACCES;

        read_protect = read_protect && efuse_key_purpose_read_protect_default(purpose);
        if (read_protect && wr_disabled(e, WR_DIS_RD_DIS))
                return -EACCES;

        blk = e->blocks[b];
        memcpy(blk, key, EFUSE_KEY_LEN);
        if (efuse_key_purpose_reverses_key(purpose))
                memrev(blk, EFUSE_KEY_LEN);

        bits_or(e->blocks[0], KEY_PURPOSE_START(key_block), 4, (uint64_t) purpose);
        if (read_protect)
                bits_or(e->blocks[0], RD_DIS_START, 7, UINT64_C(1) << key_block);
        /* burn_key without --no-write-protect: the block and its purpose. */
        bits_or(e->blocks[0], WR_DIS_START, 32,
                (UINT64_C(1) << WR_DIS_BLOCK(b)) | (UINT64_C(1) << WR_DIS_KEY_PURPOSE(key_block)));

        log_debug("burned BLOCK_KEY%u, purpose %s%s", key_block, efuse_key_purpose_to_string(purpose),
                  read_protect ? ", read-protected" : "");
        return 0;
}

/* ---- HMAC peripheral ---- */

static bool hmac_purpose_matches(EfuseKeyPurpose requested, EfuseKeyPurpose block) {
        if (requested == block)
                return true;
        /* Silicon accepts HMAC_DOWN_ALL for either downstream use (§1.1). */
        return block == EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL &&
                (requested == EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE ||
                 requested == EFUSE_KEY_PURPOSE_HMAC_DOWN_JTAG);
}

int efuse_hmac(const Efuse *e, unsigned key_block, EfuseKeyPurpose purpose,
               const void *msg, size_t len, uint8_t mac[32]) {
        unsigned mac_len = 0;

        if (!e || !mac || (!msg && len > 0) || !key_block_ok(key_block))
                return -EINVAL;
        if (purpose != EFUSE_KEY_PURPOSE_HMAC_UP && purpose != EFUSE_KEY_PURPOSE_HMAC_DOWN_ALL &&
            purpose != EFUSE_KEY_PURPOSE_HMAC_DOWN_JTAG &&
            purpose != EFUSE_KEY_PURPOSE_HMAC_DOWN_DIGITAL_SIGNATURE)
                return -EINVAL;
        if (!hmac_purpose_matches(purpose, efuse_key_purpose(e, key_block)))
                return -ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL;

        if (!HMAC(EVP_sha256(), e->blocks[EFUSE_KEY_BLOCK_FIRST + key_block], EFUSE_KEY_LEN,
                  msg ? msg : (const void *) "", len, mac, &mac_len) || mac_len != 32)
                return -EIO;
        return 0;
}

/* ---- Fields ---- */

static int burn_field(Efuse *e, const EfuseFieldInfo *f, uint64_t value, char *err, size_t errlen) {
        uint64_t old, max;
        uint8_t *blk = e->blocks[f->block];

        if (f->len > 64) {
                (void) errf(err, errlen, 0, "%s is %u bits wide; burn it with burn-key", f->name, f->len);
                return -E2BIG;
        }
        max = f->len == 64 ? UINT64_MAX : (UINT64_C(1) << f->len) - 1;
        if (value > max) {
                (void) errf(err, errlen, 0, "%s is %u bits wide; value 0x%" PRIx64 " does not fit (max 0x%" PRIx64 ")",
                        f->name, f->len, value, max);
                return -ERANGE;
        }

        old = bits_get(blk, f->start, f->len);
        if (f->type == EFUSE_FIELD_BITMAP)
                value |= old;
        if (value == old)
                return 0;

        if (wr_disabled(e, f->wr_dis_bit)) {
                (void) errf(err, errlen, 0, "%s is write-protected (WR_DIS bit %d is set)", f->name, f->wr_dis_bit);
                return -EACCES;
        }
        if (old & ~value) {
                (void) errf(err, errlen, 0,
                        "%s: new value 0x%" PRIx64 " would clear burned bits of 0x%" PRIx64
                        " (eFuse bits only go 0 -> 1)", f->name, value, old);
                return -EPERM;
        }
        if (f->type == EFUSE_FIELD_PURPOSE && !efuse_key_purpose_valid_for_chip(e->chip, (EfuseKeyPurpose) value)) {
                (void) errf(err, errlen, 0, "%s: %" PRIu64 " is not a key purpose of %s",
                        f->name, value, esp_chip_to_string(e->chip));
                return -EINVAL;
        }
        if (f->type == EFUSE_FIELD_PURPOSE && f->start == KEY_PURPOSE_START(5) && purpose_is_xts((EfuseKeyPurpose) value)) {
                (void) errf(err, errlen, 0, "KEY_PURPOSE_5 cannot be an XTS_AES purpose (BLOCK_KEY5 hardware quirk)");
                return -EINVAL;
        }

        bits_or(blk, f->start, f->len, value);
        log_debug("burned %s = 0x%" PRIx64, f->name, value);
        return 0;
}

int efuse_burn_field_full(Efuse *e, const char *name, uint64_t value, char *err, size_t errlen) {
        const EfuseFieldInfo *f;

        if (!e || !name)
                return -EINVAL;
        f = efuse_field_by_name(e->chip, name);
        if (!f) {
                (void) errf(err, errlen, 0, "'%s' is not an eFuse field of %s", name, esp_chip_to_string(e->chip));
                return -ENOENT;
        }
        return burn_field(e, f, value, err, errlen);
}

int efuse_burn_field(Efuse *e, const char *name, uint64_t value) {
        return efuse_burn_field_full(e, name, value, NULL, 0);
}

bool efuse_field_is_readable(const Efuse *e, const EfuseFieldInfo *f) {
        return e && f && !rd_disabled(e, f->rd_dis_bit);
}

bool efuse_field_is_writeable(const Efuse *e, const EfuseFieldInfo *f) {
        return e && f && !wr_disabled(e, f->wr_dis_bit);
}

int efuse_field_get_raw(const Efuse *e, const EfuseFieldInfo *f, uint8_t *out, size_t out_size) {
        size_t n;

        if (!e || !f || !out)
                return -EINVAL;
        n = (f->len + 7) / 8;
        if (out_size < n)
                return -ENOBUFS;
        memset(out, 0, n);
        if (!efuse_field_is_readable(e, f))
                return 0;
        for (unsigned i = 0; i < f->len; i++)
                if (bit_get(e->blocks[f->block], f->start + i))
                        out[i / 8] |= (uint8_t) (1u << (i % 8));
        return 0;
}

int efuse_get_field(const Efuse *e, const char *name, uint64_t *ret) {
        const EfuseFieldInfo *f;

        if (!e || !name || !ret)
                return -EINVAL;
        f = efuse_field_by_name(e->chip, name);
        if (!f)
                return -ENOENT;
        if (f->len > 64)
                return -E2BIG;
        *ret = efuse_field_is_readable(e, f) ? bits_get(e->blocks[f->block], f->start, f->len) : 0;
        return 0;
}

int efuse_field_format_value(const Efuse *e, const EfuseFieldInfo *f, char *buf, size_t size) {
        uint8_t raw[32];
        uint64_t v;
        int r, n = 0;

        if (!e || !f || !buf || size == 0)
                return -EINVAL;
        r = efuse_field_get_raw(e, f, raw, sizeof(raw));
        if (r < 0)
                return r;
        v = f->len <= 64 ? bits_get(e->blocks[f->block], f->start, f->len) : 0;
        if (!efuse_field_is_readable(e, f))
                v = 0;

        switch (f->type) {
        case EFUSE_FIELD_BOOL:
                n = snprintf(buf, size, "%s", v ? "True" : "False");
                break;
        case EFUSE_FIELD_UINT:
        case EFUSE_FIELD_BITMAP:
        case EFUSE_FIELD_SOFT_DIS:
        case EFUSE_FIELD_THERMO:
                n = snprintf(buf, size, "%" PRIu64, v);
                break;
        case EFUSE_FIELD_PURPOSE: {
                const char *s = efuse_key_purpose_to_string((EfuseKeyPurpose) v);
                n = s ? snprintf(buf, size, "%s", s) : snprintf(buf, size, "UNKNOWN_%" PRIu64, v);
                break;
        }
        case EFUSE_FIELD_CRYPT_CNT:
                n = snprintf(buf, size, "%s", __builtin_popcountll(v) % 2 ? "Enable" : "Disable");
                break;
        case EFUSE_FIELD_MAC:
                n = snprintf(buf, size, "%02x:%02x:%02x:%02x:%02x:%02x",
                             raw[5], raw[4], raw[3], raw[2], raw[1], raw[0]);
                break;
        case EFUSE_FIELD_KEY: {
                bool hidden = !efuse_field_is_readable(e, f);
                size_t nb = f->len / 8;

                if (size < nb * 3)
                        return -ENOBUFS;
                for (size_t i = 0; i < nb; i++) {
                        if (hidden)
                                memcpy(buf + 3 * i, "??", 2);
                        else
                                snprintf(buf + 3 * i, 3, "%02x", raw[i]);
                        buf[3 * i + 2] = i + 1 < nb ? ' ' : '\0';
                }
                n = (int) (nb * 3 - 1);
                break;
        }
        case _EFUSE_FIELD_TYPE_MAX:
        case _EFUSE_FIELD_TYPE_INVALID:
                return -EINVAL;
        }
        if (n < 0 || (size_t) n >= size)
                return -ENOBUFS;
        return 0;
}

/* ---- MAC ---- */

int efuse_set_mac(Efuse *e, const uint8_t mac[EFUSE_MAC_LEN]) {
        uint64_t v = 0;

        if (!e || !mac)
                return -EINVAL;
        /* Byte-reversed (§2.1): the first octet sits in bits 40..47, so the
         * 48-bit field value is the MAC read as a big-endian number. */
        for (unsigned i = 0; i < EFUSE_MAC_LEN; i++)
                v = (v << 8) | mac[i];
        return efuse_burn_field(e, "MAC", v);
}

void efuse_get_mac(const Efuse *e, uint8_t mac[EFUSE_MAC_LEN]) {
        uint64_t v = bits_get(e->blocks[1], 0, 48);

        for (int i = EFUSE_MAC_LEN - 1; i >= 0; i--) {
                mac[i] = v & 0xff;
                v >>= 8;
        }
}

/* ---- Secure boot ---- */

static uint64_t field_value(const Efuse *e, const char *name) {
        uint64_t v = 0;
        (void) efuse_get_field(e, name, &v);
        return v;
}

unsigned efuse_secure_version(const Efuse *e) {
        /* IDF reads the thermometer code as a popcount (§2.4). */
        return (unsigned) __builtin_popcountll(field_value(e, "SECURE_VERSION"));
}

int efuse_burn_secure_version(Efuse *e, unsigned v) {
        uint64_t cur, want;

        if (!e)
                return -EINVAL;
        if (v > 16)
                return -ERANGE;
        if (efuse_secure_version(e) >= v)
                return 0;
        cur = field_value(e, "SECURE_VERSION");
        /* Only new bits: fill the lowest zero bits until the popcount is v. */
        want = cur;
        for (unsigned i = 0; i < 16 && (unsigned) __builtin_popcountll(want) < v; i++)
                want |= UINT64_C(1) << i;
        return efuse_burn_field(e, "SECURE_VERSION", want);
}

bool efuse_secure_boot_enabled(const Efuse *e) {
        return field_value(e, "SECURE_BOOT_EN") != 0;
}

bool efuse_flash_encryption_enabled(const Efuse *e) {
        return __builtin_popcountll(field_value(e, "SPI_BOOT_CRYPT_CNT")) % 2 == 1;
}

int efuse_secure_boot_digests(const Efuse *e, uint8_t digests[3][32], bool present[3]) {
        static const char *const revoke[3] = {
                "SECURE_BOOT_KEY_REVOKE0", "SECURE_BOOT_KEY_REVOKE1", "SECURE_BOOT_KEY_REVOKE2",
        };
        int count = 0;

        if (!e || !digests || !present)
                return -EINVAL;
        for (unsigned s = 0; s < 3; s++) {
                present[s] = false;
                memset(digests[s], 0, 32);
                if (field_value(e, revoke[s]))
                        continue;
                for (unsigned n = 0; n < EFUSE_KEY_BLOCKS; n++)
                        if (efuse_key_purpose(e, n) == (EfuseKeyPurpose) (EFUSE_KEY_PURPOSE_SECURE_BOOT_DIGEST0 + s)) {
                                /* The ROM uses the real value, readable or not. */
                                memcpy(digests[s], e->blocks[EFUSE_KEY_BLOCK_FIRST + n], 32);
                                present[s] = true;
                                count++;
                                break;
                        }
        }
        return count;
}

int efuse_revoke_secure_boot_digest(Efuse *e, unsigned slot) {
        char name[32];

        if (!e)
                return -EINVAL;
        if (slot > 2)
                return -ERANGE;
        snprintf(name, sizeof(name), "SECURE_BOOT_KEY_REVOKE%u", slot);
        return efuse_burn_field(e, name, 1);
}
