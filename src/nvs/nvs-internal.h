/* SPDX-License-Identifier: MIT */
#pragma once

/* On-flash layout of NVS v2 (esp-formats.md §3.1, §3.2), shared by the
 * storage engine, the generator and the tests. Not a public header. */

#include <stdbool.h>
#include <stdint.h>

#include "nvs/nvs.h"

#define NVS_FORMAT_V1 0xFFu          /* no multi-page blobs */
#define NVS_FORMAT_V2 0xFEu          /* current */

#define NVS_STATE_UNINITIALIZED 0xFFFFFFFFu
#define NVS_STATE_ACTIVE 0xFFFFFFFEu
#define NVS_STATE_FULL 0xFFFFFFFCu
#define NVS_STATE_FREEING 0xFFFFFFF8u
#define NVS_STATE_CORRUPT 0xFFFFFFF0u

#define NVS_HEADER_SIZE 32u
#define NVS_BITMAP_OFFSET 32u
#define NVS_BITMAP_SIZE 32u
#define NVS_FIRST_ENTRY_OFFSET 64u
#define NVS_CHUNK_ANY 0xFFu
#define NVS_CHUNK_VERSION_ALT 0x80u  /* chunkStart of the alternate blob version */
#define NVS_MAX_CHUNKS_PER_BLOB 127u

/* Entry state, 2 bits per entry in the page bitmap (§3.1). */
typedef enum NvsEntryState {
        NVS_ENTRY_ERASED = 0,
        NVS_ENTRY_ILLEGAL = 1,
        NVS_ENTRY_WRITTEN = 2,
        NVS_ENTRY_EMPTY = 3,
} NvsEntryState;

/* Byte offsets inside a 32-byte item (§3.2). */
#define NVS_ITEM_NS 0
#define NVS_ITEM_TYPE 1
#define NVS_ITEM_SPAN 2
#define NVS_ITEM_CHUNK 3
#define NVS_ITEM_CRC 4
#define NVS_ITEM_KEY 8
#define NVS_ITEM_DATA 24

/* ESP-CRC over bytes 0–3 ‖ 8–31 of an item. */
uint32_t nvs_item_crc(const uint8_t item[NVS_ENTRY_SIZE]);
void nvs_item_set_crc(uint8_t item[NVS_ENTRY_SIZE]);
/* ESP-CRC over header bytes 4…27. */
uint32_t nvs_header_crc(const uint8_t header[NVS_HEADER_SIZE]);
/* A fresh page header: state, seq, version, 0xFF reserved, CRC. */
void nvs_header_init(uint8_t header[NVS_HEADER_SIZE], uint32_t state, uint32_t seq, uint8_t version);

static inline NvsEntryState nvs_bitmap_get(const uint8_t *bitmap, unsigned i) {
        return (NvsEntryState) ((bitmap[i / 4] >> (2 * (i % 4))) & 3);
}
static inline void nvs_bitmap_set(uint8_t *bitmap, unsigned i, NvsEntryState s) {
        bitmap[i / 4] = (uint8_t) ((bitmap[i / 4] & ~(3u << (2 * (i % 4)))) | ((unsigned) s << (2 * (i % 4))));
}

/* Size in bytes of a primitive type's value, 0 when the type is not one. */
unsigned nvs_type_primitive_size(uint8_t type);
bool nvs_type_is_signed(uint8_t type);
/* SZ, legacy BLOB and BLOB_DATA: header + payload entries. */
bool nvs_type_is_varlen(uint8_t type);
bool nvs_type_is_known(uint8_t type);

static inline unsigned nvs_span_for_size(size_t size) {
        return 1 + (unsigned) ((size + NVS_ENTRY_SIZE - 1) / NVS_ENTRY_SIZE);
}

/* Relative address of entry i of page p: the XTS tweak (§3.4). */
static inline uint32_t nvs_entry_address(unsigned page, unsigned i) {
        return page * NVS_PAGE_SIZE + NVS_FIRST_ENTRY_OFFSET + i * NVS_ENTRY_SIZE;
}

/* AES-256-XTS per 32-byte entry, key eky ‖ tky, tweak = LE32(rel_addr) ‖ 0¹².
 * One context per direction, keyed once. */
typedef struct NvsXts NvsXts;
int nvs_xts_new(const NvsXtsKeys *keys, NvsXts **ret);
NvsXts *nvs_xts_free(NvsXts *x);
int nvs_xts_crypt(NvsXts *x, bool encrypt, uint32_t rel_addr, const uint8_t *in, uint8_t *out, unsigned n_entries);

/* Strict decoders used by the generator and `nvs set`. */
int nvs_base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len);

/* Parses `text` as the integer type named `name` ("u8" … "i64"): the item
 * type and the value as raw 64-bit two's complement. -ENOENT when `name` is
 * not an integer type, -ERANGE/-EINVAL when the text is not a value of it. */
int nvs_parse_int_text(const char *name, const char *text, int base, uint8_t *ret_type, uint64_t *ret_raw);

/* Where the partition's bytes live: a flash region or a memory buffer.
 * Offsets are partition-relative. `userdata` is owned: `free` releases it. */
typedef struct NvsIo {
        int (*read)(void *userdata, uint32_t off, void *buf, size_t len);
        int (*write)(void *userdata, uint32_t off, const void *buf, size_t len);
        int (*erase)(void *userdata, uint32_t off, size_t len);
        void (*free)(void *userdata);
        void *userdata;
} NvsIo;

/* Takes ownership of io->userdata (also on failure). */
int nvs_open_io(const NvsIo *io, uint32_t size, const NvsXtsKeys *keys, NvsOpenFlags flags, Nvs **ret);
