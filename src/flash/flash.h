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
 * zeros that the emulated chip did not program. */

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
