/* SPDX-License-Identifier: MIT */
#pragma once

/* A content-addressed store of 4 KiB flash sectors, shared by a whole fleet
 * (issue #10). A device's flash refers to a stored sector by its SHA-256
 * (flash.h, "Store-backed ranges"), so 20,000 devices holding the same
 * image hold it once.
 *
 *   STORE/lock            flock()ed shared by every process that has the
 *                         store open, exclusively by the garbage collector
 *   STORE/sectors/<hex>   one 4 KiB file per distinct sector, named by the
 *                         SHA-256 of its content, never modified
 *   STORE/tmp/            where a sector is written before its rename
 *
 * A sector enters the store as tmp file → fdatasync → rename → fsync of the
 * directory, and only then may a device map refer to it. So whatever the
 * moment a process dies or power goes, a name in sectors/ always holds the
 * content it names, and every map entry that reached the disk names a
 * sector that did.
 *
 * There are no reference counts on disk: the device maps are the only truth.
 * A sector no map names any more is garbage, and sector_store_gc() removes
 * it (mark from every map, then sweep) while no other process has the store
 * open. A counter that a crash can leave off by one cannot exist.
 *
 * One SectorStore per process and directory: sector_store_open() of the
 * same directory again returns the same object with one more reference.
 * It keeps the digests it has seen in memory (32 bytes each, interned:
 * a device map holds 4-byte ids), so a sector that 20,000 devices write
 * is hashed and looked up, but written and synced once. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECTOR_STORE_SECTOR_SIZE 4096u
#define SECTOR_STORE_DIGEST_SIZE 32u

typedef struct SectorStore SectorStore;

typedef enum SectorStoreFlags {
        SECTOR_STORE_CREATE = 1 << 0,     /* create the directory layout if missing */
        SECTOR_STORE_READ_ONLY = 1 << 1,  /* never write a sector */
} SectorStoreFlags;

int sector_store_open(const char *dir, SectorStoreFlags flags, SectorStore **ret);
SectorStore *sector_store_ref(SectorStore *s);
SectorStore *sector_store_unref(SectorStore *s);   /* accepts NULL, returns NULL */
static inline void sector_store_unrefp(SectorStore **s) {
        sector_store_unref(*s);
}

const char *sector_store_path(const SectorStore *s);

/* Stores one sector (hashing it) unless the store already holds it, and
 * returns its id (> 0). The sector is durable when this returns. */
int sector_store_put(SectorStore *s, const uint8_t data[static SECTOR_STORE_SECTOR_SIZE], uint32_t *ret_id);

/* sector_store_put() for a sector that goes to flash sector `hint` of a
 * device: one equal, byte for byte, to the last sector put with the same
 * hint is found without hashing it. An OTA herd writes the same image at
 * the same place of every device, so its sectors are compared, not hashed.
 * The store keeps a copy of the last sector per hint (hint modulo
 * SECTOR_STORE_RECENT_SLOTS), at most 4 MiB per store. */
#define SECTOR_STORE_RECENT_SLOTS 1024u
int sector_store_put_at(SectorStore *s, uint32_t hint, const uint8_t data[static SECTOR_STORE_SECTOR_SIZE],
                        uint32_t *ret_id);

/* The id of a digest read from a map; -ENOENT (and no id) when the store
 * does not hold that sector. */
int sector_store_intern(SectorStore *s, const uint8_t digest[static SECTOR_STORE_DIGEST_SIZE], uint32_t *ret_id);

/* The digest of an id; NULL for an unknown id. */
const uint8_t *sector_store_digest(const SectorStore *s, uint32_t id);

/* Reads [off, off+len) of a stored sector. */
int sector_store_read(SectorStore *s, uint32_t id, uint32_t off, void *buf, size_t len);

/* Test hook: the n-th next sector write stops at a point given by `where`
 * (0: after the tmp file is written, 1: after its fdatasync, 2: after the
 * rename) and fails with -EIO, as a process killed there would leave it.
 * n < 0 disables. */
void sector_store_set_fail_point(SectorStore *s, int64_t n, unsigned where);

/* Counts, for the garbage collector and `espfleet store`. */
typedef struct SectorStoreStats {
        uint64_t n_sectors;        /* files in sectors/ */
        uint64_t n_referenced;     /* of them, named by at least one map */
        uint64_t n_refs;           /* map entries, over all maps */
        uint64_t n_missing;        /* map entries naming a sector the store does not hold */
        uint64_t n_corrupt;        /* sectors whose content does not hash to their name (verify only) */
        uint64_t n_removed;        /* garbage removed (gc only) */
        uint64_t n_tmp_removed;    /* leftovers in tmp/ removed (gc only) */
        uint64_t disk_bytes;       /* st_blocks of sectors/ after the run */
} SectorStoreStats;

typedef enum SectorStoreScanFlags {
        SECTOR_STORE_SCAN_GC = 1 << 0,        /* remove garbage and tmp leftovers: takes the lock exclusively */
        SECTOR_STORE_SCAN_VERIFY = 1 << 1,    /* hash every sector file */
} SectorStoreScanFlags;

/* Mark and sweep. The caller feeds every map entry of every device of the
 * store (flash_map_for_each_digest()) to sector_store_scan_mark(), then
 * sector_store_scan_end() counts, checks and, with SECTOR_STORE_SCAN_GC,
 * removes what no map named. With SECTOR_STORE_SCAN_GC, begin fails with
 * -EBUSY while another process has the store open (and keeps it from being
 * opened until the end). `refcount`, when not NULL, is called once per
 * referenced sector with its number of map entries. */
typedef struct SectorStoreScan SectorStoreScan;
int sector_store_scan_begin(const char *dir, SectorStoreScanFlags flags, SectorStoreScan **ret);
int sector_store_scan_mark(SectorStoreScan *sc, const uint8_t digest[static SECTOR_STORE_DIGEST_SIZE]);
int sector_store_scan_end(SectorStoreScan *sc,
                          void (*refcount)(const uint8_t digest[SECTOR_STORE_DIGEST_SIZE], uint64_t n, void *userdata),
                          void *userdata, SectorStoreStats *ret);
SectorStoreScan *sector_store_scan_free(SectorStoreScan *sc);
static inline void sector_store_scan_freep(SectorStoreScan **sc) {
        sector_store_scan_free(*sc);
}

void sector_store_digest_to_hex(const uint8_t digest[static SECTOR_STORE_DIGEST_SIZE], char hex[static 65]);
