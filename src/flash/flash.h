/* SPDX-License-Identifier: MIT */
#pragma once

/* An emulated SPI NOR flash chip backed by a sparse file (esp-formats.md §0,
 * issue #4). The file is a raw flash image (byte i of the file = flash
 * address i), so esptool, QEMU and `dd` see the usual layout.
 *
 * NOR semantics:
 *  - erase works on 4 KiB sectors and sets them to 0xFF;
 *  - a write can only clear bits: writing a 1 over a 0 fails with -EPERM
 *    and changes nothing;
 *  - every access is bounds-checked (-ERANGE).
 *
 * Sparse storage: a sector that was never written or erased is a hole in the
 * file and costs no disk. A hole reads as erased flash (0xFF). Writing into a
 * hole first materialises the sector as 0xFF, so the file never contains
 * zeros that the emulated chip did not program.
 *
 * Store-backed ranges (issue #10): flash_enable_store() names ranges (the
 * OTA slots) whose sectors live in a fleet-wide content-addressed store
 * (sector-store.h) instead of the file. The file `<path>.map` then maps each
 * such sector to the SHA-256 of its content; a mapped sector is a hole in
 * the image file. None of this shows through the API: reads, writes,
 * erases, power cuts and flash_export() behave byte for byte as without a
 * store.
 *  - A write that reaches the end of a sector in such a range stores the
 *    sector's new content (once per fleet) and switches the map entry to
 *    it in one 32-byte write; the data that sat in the file is punched out.
 *  - A write that ends inside a mapped sector first copies that one sector
 *    into the file (copy on write), then writes there as usual.
 *  - Erase punches the file, then clears the map entry.
 * At each step a process killed there leaves every sector reading either as
 * before or as after the operation; flash_sync() is the durability barrier
 * against a real power loss, as for the file alone. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLASH_SECTOR_SIZE 4096u
#define FLASH_DEFAULT_SIZE (4u * 1024u * 1024u)

typedef struct Flash Flash;

typedef enum FlashOpenFlags {
        FLASH_OPEN_READ_ONLY = 1 << 0,
        FLASH_OPEN_CREATE = 1 << 1,    /* create a new all-erased (sparse) image of `size`; -EEXIST if present */
} FlashOpenFlags;

/* Opens a flash image. With FLASH_OPEN_CREATE the file is created with mode
 * 0600 and `size` (multiple of 4 KiB). Without it, `size` 0 means "take the
 * file's size"; the file size must be a multiple of 4 KiB (-EBADMSG otherwise). */
int flash_open(const char *path, FlashOpenFlags flags, uint32_t size, Flash **ret);
Flash *flash_close(Flash *f);    /* accepts NULL, returns NULL */
static inline void flash_closep(Flash **f) {
        flash_close(*f);
}

/* Closes the image's fd while the flash is idle; the next access reopens
 * it by path. A fleet of idle devices then holds no fd for its flash. */
void flash_release_fd(Flash *f);
bool flash_holds_fd(const Flash *f);

uint32_t flash_size(const Flash *f);
const char *flash_path(const Flash *f);

int flash_read(Flash *f, uint32_t addr, void *buf, size_t len);
int flash_write(Flash *f, uint32_t addr, const void *buf, size_t len);
int flash_erase(Flash *f, uint32_t addr, size_t len);   /* addr and len 4 KiB aligned, else -EINVAL */

/* Power-cut injection for tests: after `n` more successful write/erase
 * operations, the next one is cut short (a write lands only a prefix of its
 * bytes, in whole 4-byte words; an erase leaves the sector partly erased)
 * and every later write or erase fails with -EIO until flash_power_restore().
 * n < 0 disables injection. */
void flash_set_power_cut(Flash *f, int64_t n);
void flash_power_restore(Flash *f);
uint64_t flash_write_count(const Flash *f);  /* writes + erases done so far */

/* Disk actually used by [addr, addr+len): allocated sectors × 4 KiB. */
int flash_allocated_bytes(const Flash *f, uint32_t addr, size_t len, uint64_t *ret);

/* Writes a dense copy of the image to `path` (mode 0600, holes as 0xFF), as
 * QEMU and esptool expect. */
int flash_export(Flash *f, const char *path);

/* fdatasync() of the image file. */
int flash_sync(Flash *f);

typedef struct FlashRange {
        uint32_t addr;   /* 4 KiB aligned */
        uint32_t len;    /* multiple of 4 KiB */
} FlashRange;

#define FLASH_MAX_STORE_RANGES 16u

/* Puts `ranges` (at most FLASH_MAX_STORE_RANGES) of a writable flash into
 * the store at `store_dir` (relative to the image's directory unless
 * absolute; created if missing): writes `<path>.map` atomically, then moves
 * the sectors those ranges already hold into the store. -EEXIST when the
 * flash already has a map. */
int flash_enable_store(Flash *f, const char *store_dir, const FlashRange *ranges, size_t n_ranges);
bool flash_has_store(const Flash *f);

/* Bytes of [addr, addr+len) held in the store (mapped sectors × 4 KiB). */
int flash_mapped_bytes(const Flash *f, uint32_t addr, size_t len, uint64_t *ret);

/* A digest of the content of the whole sectors covering [addr, addr+len)
 * computed from their map entries, without reading them: equal
 * fingerprints mean equal bytes. -ENODATA unless every one of those
 * sectors is mapped. */
int flash_range_fingerprint(Flash *f, uint32_t addr, size_t len, uint8_t ret[static 32]);

/* `<flash_path>.map`, malloc'ed. */
char *flash_map_path(const char *flash_path);

/* Calls `cb` for every map entry of the map file at `map_path` (for the
 * store's garbage collector). 0 with no call when the file does not exist. */
int flash_map_for_each_digest(const char *map_path, int (*cb)(const uint8_t digest[32], void *userdata),
                              void *userdata);

/* A window onto part of a flash (a partition). Plain value type; `flash` is
 * borrowed. All offsets are relative to `offset`, and accesses outside
 * [0, size) fail with -ERANGE. */
typedef struct FlashRegion {
        Flash *flash;     /* not owned */
        uint32_t offset;
        uint32_t size;
} FlashRegion;

int flash_region_read(const FlashRegion *r, uint32_t off, void *buf, size_t len);
int flash_region_write(const FlashRegion *r, uint32_t off, const void *buf, size_t len);
int flash_region_erase(const FlashRegion *r, uint32_t off, size_t len);
