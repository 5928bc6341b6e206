/* SPDX-License-Identifier: MIT */
#pragma once

/* ESP-IDF NVS, format version 2 (esp-formats.md §3): storage engine over a
 * flash region (or a memory buffer), the nvs.h-style API, the CSV generator
 * that reproduces nvs_partition_gen.py byte for byte, and XTS encryption
 * (§3.4).
 *
 * Errors: negative errno for I/O and argument problems, -ESP_ERR_NVS_* for
 * everything ESP-IDF has a name for (basic/esp-err.h), so callers can log
 * esp_err_to_name(r). This module logs nothing above debug. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flash/flash.h"

#define NVS_PAGE_SIZE 4096u
#define NVS_ENTRY_SIZE 32u
#define NVS_ENTRIES_PER_PAGE 126u
#define NVS_KEY_MAX 15u              /* characters, without the NUL (NVS_KEY_NAME_MAX_SIZE - 1) */
#define NVS_STR_MAX 4000u            /* string size in bytes, NUL included (fits one page) */
#define NVS_CHUNK_MAX 4000u          /* largest BLOB_DATA chunk: 125 entries */
#define NVS_NAMESPACE_MAX 254u       /* namespace indexes 1…254 */
#define NVS_KEYS_PARTITION_SIZE 4096u

/* Item types, with their on-flash codes (§3.2). */
typedef enum NvsType {
        NVS_TYPE_U8 = 0x01,
        NVS_TYPE_I8 = 0x11,
        NVS_TYPE_U16 = 0x02,
        NVS_TYPE_I16 = 0x12,
        NVS_TYPE_U32 = 0x04,
        NVS_TYPE_I32 = 0x14,
        NVS_TYPE_U64 = 0x08,
        NVS_TYPE_I64 = 0x18,
        NVS_TYPE_STR = 0x21,
        NVS_TYPE_FLOAT = 0x24,       /* read only: new in ESP-IDF master */
        NVS_TYPE_DOUBLE = 0x28,      /* read only */
        NVS_TYPE_BLOB = 0x41,        /* legacy v1 single-page blob (read only) */
        NVS_TYPE_BLOB_DATA = 0x42,   /* v2 blob chunk (internal) */
        NVS_TYPE_BLOB_IDX = 0x48,    /* v2 blob index; what iteration reports for a blob */
        NVS_TYPE_ANY = 0xff,
        _NVS_TYPE_INVALID = -EINVAL,
} NvsType;

/* "u8", "i8", …, "string", "blob", "blob_data", "blob_index", "float",
 * "double", "any". nvs_type_from_string also takes "str" and "blob" (-> BLOB_IDX
 * where a set is meant: see nvs_set_value). */
const char *nvs_type_to_string(NvsType t);
NvsType nvs_type_from_string(const char *s);

/* ---- Encryption keys (§3.4) ---- */

typedef struct NvsXtsKeys {
        uint8_t eky[32];   /* XTS data key */
        uint8_t tky[32];   /* XTS tweak key */
} NvsXtsKeys;

/* Parses an nvs_keys partition image (≥ 68 bytes: eky ‖ tky ‖ ESP-CRC LE32).
 * -ESP_ERR_NVS_KEYS_NOT_INITIALIZED when erased (all 0xFF),
 * -ESP_ERR_NVS_CORRUPT_KEY_PART when the CRC does not match. */
int nvs_keys_parse(const void *buf, size_t size, NvsXtsKeys *ret);
/* Reads and parses a key file; fills err with the path and reason. */
int nvs_keys_read_file(const char *path, NvsXtsKeys *ret, char *err, size_t errlen);
/* Writes the 4 KiB nvs_keys partition image (rest 0xFF). */
void nvs_keys_serialize(const NvsXtsKeys *keys, uint8_t out[NVS_KEYS_PARTITION_SIZE]);
/* Random keys (OpenSSL RAND_bytes). */
int nvs_keys_generate(NvsXtsKeys *ret);
/* HMAC scheme: eky = HMAC-SHA256(hmac_key, "5A5ABEAE"×8),
 * tky = HMAC-SHA256(hmac_key, "A5A5DECE"×8). The caller passes the HMAC_UP
 * eFuse key; this module never touches eFuse. */
int nvs_keys_from_hmac(const uint8_t hmac_key[32], NvsXtsKeys *ret);

/* ---- Generator (nvs_partition_gen.py `generate` / `encrypt`) ---- */

/* Builds a partition image of `size` bytes (multiple of 4096, ≥ 4096) from a
 * CSV file. `version` is 1 or 2. `keys` NULL = plaintext. `file` rows resolve
 * relative paths against the CSV's directory. As the Python tool does, an
 * image smaller than 0x3000 is "read-only": only the pages in use are
 * emitted (*ret_size < size). Errors fill err with "FILE:LINE: reason". */
int nvs_generate_csv_file(const char *csv_path, uint32_t size, unsigned version, const NvsXtsKeys *keys,
                          uint8_t **ret_image, size_t *ret_size, char *err, size_t errlen);
/* Same from CSV text in memory; `base_dir` resolves `file` rows (NULL = cwd),
 * `name` is used in error messages. */
int nvs_generate_csv_text(const char *csv, size_t csv_len, const char *name, const char *base_dir,
                          uint32_t size, unsigned version, const NvsXtsKeys *keys,
                          uint8_t **ret_image, size_t *ret_size, char *err, size_t errlen);

/* ---- Storage ---- */

typedef struct Nvs Nvs;
typedef struct NvsHandle NvsHandle;

typedef enum NvsOpenFlags {
        NVS_OPEN_READ_ONLY = 1 << 0,   /* never write: repairs happen in memory only */
} NvsOpenFlags;

/* Opens (loads) a partition: reads every page, checks header and entry CRCs
 * and, unless read-only, repairs what a power cut leaves behind (half-written
 * entries, a page in FREEING, duplicate copies of a key, blobs with missing
 * chunks or index, corrupt pages) before returning. `keys` NULL = plaintext.
 * A read-write open needs a free page (-ESP_ERR_NVS_NO_FREE_PAGES, as
 * nvs_flash_init; erase the partition to recover). A page written by a newer
 * format gives -ESP_ERR_NVS_NEW_VERSION_FOUND. The region is copied; its
 * flash is borrowed and must outlive the Nvs. */
int nvs_open_region(const FlashRegion *region, const NvsXtsKeys *keys, NvsOpenFlags flags, Nvs **ret);
/* Same over a memory image (borrowed, written in place with NOR rules when
 * read-write). size must be a non-zero multiple of 4096
 * (-ESP_ERR_NVS_INVALID_LENGTH). */
int nvs_open_buffer(void *buf, size_t size, const NvsXtsKeys *keys, NvsOpenFlags flags, Nvs **ret);
Nvs *nvs_close(Nvs *nvs);   /* accepts NULL, returns NULL; open handles must be closed first */
static inline void nvs_closep(Nvs **p) {
        if (*p)
                nvs_close(*p);
}

/* nvs_flash_erase_partition(): erases every sector of the region. */
int nvs_erase_region(const FlashRegion *region);

/* Entries repaired (erased or copied) while opening: 0 on a clean partition. */
unsigned nvs_repair_count(const Nvs *nvs);
bool nvs_is_encrypted(const Nvs *nvs);

typedef enum NvsMode {
        NVS_READONLY,
        NVS_READWRITE,
        _NVS_MODE_MAX,
        _NVS_MODE_INVALID = -EINVAL,
} NvsMode;

/* nvs_open(): a read-write open creates the namespace when missing; a
 * read-only open of a missing namespace is -ESP_ERR_NVS_NOT_FOUND.
 * -ESP_ERR_NVS_INVALID_NAME / -ESP_ERR_NVS_KEY_TOO_LONG for bad names,
 * -ESP_ERR_NVS_READ_ONLY for a read-write handle on a read-only Nvs. */
int nvs_handle_open(Nvs *nvs, const char *namespace_name, NvsMode mode, NvsHandle **ret);
NvsHandle *nvs_handle_close(NvsHandle *h);   /* accepts NULL, returns NULL */
static inline void nvs_handle_closep(NvsHandle **p) {
        if (*p)
                nvs_handle_close(*p);
}

/* Typed set/get, as nvs_set_* / nvs_get_*. Setting a key writes the new item
 * before erasing the old one; an identical value is not rewritten; a key set
 * with another type replaces the old item. get with another type is
 * -ESP_ERR_NVS_TYPE_MISMATCH, a missing key -ESP_ERR_NVS_NOT_FOUND.
 * Errors also: -ESP_ERR_NVS_READ_ONLY, -ESP_ERR_NVS_KEY_TOO_LONG,
 * -ESP_ERR_NVS_INVALID_NAME (empty key), -ESP_ERR_NVS_NOT_ENOUGH_SPACE,
 * -ESP_ERR_NVS_VALUE_TOO_LONG, -ESP_ERR_NVS_INVALID_STATE (after an I/O
 * failure: reopen the partition). */
int nvs_set_u8(NvsHandle *h, const char *key, uint8_t v);
int nvs_set_i8(NvsHandle *h, const char *key, int8_t v);
int nvs_set_u16(NvsHandle *h, const char *key, uint16_t v);
int nvs_set_i16(NvsHandle *h, const char *key, int16_t v);
int nvs_set_u32(NvsHandle *h, const char *key, uint32_t v);
int nvs_set_i32(NvsHandle *h, const char *key, int32_t v);
int nvs_set_u64(NvsHandle *h, const char *key, uint64_t v);
int nvs_set_i64(NvsHandle *h, const char *key, int64_t v);
int nvs_get_u8(NvsHandle *h, const char *key, uint8_t *ret);
int nvs_get_i8(NvsHandle *h, const char *key, int8_t *ret);
int nvs_get_u16(NvsHandle *h, const char *key, uint16_t *ret);
int nvs_get_i16(NvsHandle *h, const char *key, int16_t *ret);
int nvs_get_u32(NvsHandle *h, const char *key, uint32_t *ret);
int nvs_get_i32(NvsHandle *h, const char *key, int32_t *ret);
int nvs_get_u64(NvsHandle *h, const char *key, uint64_t *ret);
int nvs_get_i64(NvsHandle *h, const char *key, int64_t *ret);

/* Strings: size incl. NUL ≤ NVS_STR_MAX (-ESP_ERR_NVS_VALUE_TOO_LONG). */
int nvs_set_str(NvsHandle *h, const char *key, const char *value);
/* ESP-IDF semantics: buf NULL -> *len = required size (NUL included);
 * *len too small -> -ESP_ERR_NVS_INVALID_LENGTH (and *len = required). */
int nvs_get_str(NvsHandle *h, const char *key, char *buf, size_t *len);
/* Allocating variant. */
int nvs_get_str_alloc(NvsHandle *h, const char *key, char **ret);

/* Blobs: written as BLOB_DATA chunks + BLOB_IDX (alternating chunkStart
 * 0x00/0x80 between versions); legacy BLOB items are read too. */
int nvs_set_blob(NvsHandle *h, const char *key, const void *data, size_t size);
int nvs_get_blob(NvsHandle *h, const char *key, void *buf, size_t *len);
int nvs_get_blob_alloc(NvsHandle *h, const char *key, uint8_t **ret, size_t *ret_size);

/* -ESP_ERR_NVS_NOT_FOUND when the key does not exist. */
int nvs_erase_key(NvsHandle *h, const char *key);
/* Erases every key of the handle's namespace (the namespace stays). */
int nvs_erase_all(NvsHandle *h);
/* Writes are durable when the setter returns; kept for API parity. */
int nvs_commit(NvsHandle *h);
/* Type of an existing key (blob -> NVS_TYPE_BLOB_IDX, legacy -> NVS_TYPE_BLOB). */
int nvs_find_key(NvsHandle *h, const char *key, NvsType *ret_type);

/* ---- Iteration, generic values, dump ---- */

typedef struct NvsEntryInfo {
        char namespace_name[NVS_KEY_MAX + 1];
        char key[NVS_KEY_MAX + 1];
        NvsType type;              /* blobs report NVS_TYPE_BLOB_IDX (v2) or NVS_TYPE_BLOB (v1) */
        uint8_t namespace_index;
} NvsEntryInfo;

/* Calls f for every key (namespace entries and blob chunks are not keys), in
 * partition order. namespace_name NULL = all; type NVS_TYPE_ANY = all.
 * A negative return from f stops and is returned; a positive one stops and 0
 * is returned. */
typedef int (*NvsIterFunc)(const NvsEntryInfo *info, void *userdata);
int nvs_iterate(Nvs *nvs, const char *namespace_name, NvsType type, NvsIterFunc f, void *userdata);

typedef struct NvsValue {
        NvsType type;
        uint64_t u;       /* unsigned types, and the raw bits of FLOAT/DOUBLE */
        int64_t i;        /* signed types */
        double d;         /* FLOAT and DOUBLE */
        uint8_t *data;    /* STR (NUL included in size), BLOB, BLOB_IDX: owned */
        size_t size;
} NvsValue;

/* Reads any key without a handle (for dumps). */
int nvs_get_value(Nvs *nvs, const char *namespace_name, const char *key, NvsValue *ret);
void nvs_value_done(NvsValue *v);
/* Sets a key from text, as `espfleet nvs set` does: type "u8"…"i64" (decimal
 * or 0x hex), "string", "hex2bin" (blob from hex), "base64" (blob). err says
 * what is wrong with the value. */
int nvs_set_from_text(NvsHandle *h, const char *key, const char *type, const char *value,
                      char *err, size_t errlen);

typedef enum NvsPageState {
        NVS_PAGE_UNINITIALIZED,   /* 0xFFFFFFFF: erased, free */
        NVS_PAGE_ACTIVE,          /* 0xFFFFFFFE */
        NVS_PAGE_FULL,            /* 0xFFFFFFFC */
        NVS_PAGE_FREEING,         /* 0xFFFFFFF8: being garbage-collected */
        NVS_PAGE_CORRUPT,         /* bad header CRC, unknown state, or not blank while uninitialised */
        _NVS_PAGE_STATE_MAX,
        _NVS_PAGE_STATE_INVALID = -EINVAL,
} NvsPageState;

const char *nvs_page_state_to_string(NvsPageState s);   /* "UNINITIALIZED", "ACTIVE", … */
NvsPageState nvs_page_state_from_string(const char *s);

typedef struct NvsPageInfo {
        unsigned index;           /* position in the partition */
        NvsPageState state;
        uint32_t state_raw;
        uint32_t seq;
        uint8_t version;          /* 0xFE = v2, 0xFF = v1 */
        unsigned written, erased, empty;   /* entry states */
} NvsPageInfo;

unsigned nvs_page_count(const Nvs *nvs);
int nvs_page_info(const Nvs *nvs, unsigned index, NvsPageInfo *ret);

typedef struct NvsStats {
        size_t used_entries;      /* WRITTEN */
        size_t free_entries;      /* EMPTY or ERASED, reserved page included (as nvs_get_stats) */
        size_t available_entries; /* free_entries minus the reserved page */
        size_t total_entries;
        size_t namespace_count;
} NvsStats;

int nvs_get_stats(const Nvs *nvs, NvsStats *ret);
